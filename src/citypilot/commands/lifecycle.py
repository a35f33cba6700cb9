"""The life of a command and of a batch (pure).

A batch is what an operator asked (``dim`` these 5,000 lights to 40 %, because ...); each asset gets its
own command, with its own id (what the device sees and repeats in its acknowledgement) and outcome.

Batch: ``pending_confirmation`` -> (the sender confirms) -> ``pending_approval`` -> (a second person
approves) -> ``authorised``; either step is skipped when not needed. ``cancelled`` before it is
authorised. Once authorised, its commands go out, and the batch is ``finished`` when every command is.

Command: ``requested`` (waiting for the batch) -> ``sent`` -> ``done`` | ``rejected`` | ``failed`` (the
device's answer) | ``timed_out`` (no answer after the last attempt) | ``expired`` (its time passed
before it could be sent or done); ``refused`` by the control centre's own checks, never sent;
``cancelled`` with its batch.
"""

from __future__ import annotations

BATCH_PENDING = ("pending_confirmation", "pending_approval")
BATCH_STATES = (*BATCH_PENDING, "authorised", "finished", "cancelled")

OPEN = ("requested", "sent")
DEVICE_ANSWERS = ("done", "rejected", "failed")
FINAL = (*DEVICE_ANSWERS, "timed_out", "expired", "refused", "cancelled")
STATES = (*OPEN, *FINAL)


class CommandError(ValueError):
    """A command that cannot be taken: ``status`` is the HTTP status, ``field`` what was wrong."""

    def __init__(self, status: int, detail: str, *, code: str = "invalid-command", field: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code
        self.field = field


def first_state(confirm: bool, approval: bool) -> str:
    """Where a new batch starts."""
    if confirm:
        return "pending_confirmation"
    if approval:
        return "pending_approval"
    return "authorised"


def after_confirmation(approval: bool) -> str:
    return "pending_approval" if approval else "authorised"


def check_confirm(state: str, requested_by: str, who: str) -> None:
    if state != "pending_confirmation":
        raise CommandError(409, f"this batch is {state.replace('_', ' ')}: there is nothing to confirm", code="illegal-transition")
    if who != requested_by:
        raise CommandError(403, "only the person who asked may confirm", code="not-yours")


def check_approve(state: str, requested_by: str, confirmed_by: str | None, who: str) -> None:
    if state != "pending_approval":
        raise CommandError(409, f"this batch is {state.replace('_', ' ')}: there is nothing to approve", code="illegal-transition")
    if who in (requested_by, confirmed_by):
        raise CommandError(403, "a second person must approve: not the one who asked", code="four-eyes")


def check_cancel(state: str) -> None:
    if state not in BATCH_PENDING:
        raise CommandError(409, f"this batch is {state.replace('_', ' ')}: only a batch waiting for confirmation "
                                "or approval can be cancelled", code="illegal-transition")


def answer_state(status: object) -> str | None:
    """The command state a device's acknowledgement status means (None: not an answer we know)."""
    return status if isinstance(status, str) and status in DEVICE_ANSWERS else None
