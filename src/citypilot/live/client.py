"""One operator's connection to the live feed: what it may see, where it is in the journal, and a bounded
outbox drained by its own sender task.

The hub's fan-out never awaits a client: it *offers* a frame, and a client whose outbox is full (it does
not read, or its network cannot keep up) is cut off with 4002 rather than slowing the others down or
holding memory without bound. The catch-up of a resuming client is its own task, so it may *wait* for
room; it waits until the outbox is below half full, leaving the other half for live frames meanwhile.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import deque
from typing import Any, Awaitable, Callable

import msgspec
from prometheus_client import Counter

from citypilot.auth.accounts import Principal

from .filters import LiveFilter

log = logging.getLogger("citypilot.live")

FRAMES = Counter("citypilot_live_frames_total", "Frames sent to live-feed clients", ["type"])
DISCONNECTS = Counter("citypilot_live_disconnects_total", "Live-feed connections ended, by reason", ["reason"])

SLOW = (4002, "not reading fast enough", "slow_reader")
BATCH_EVENTS = 500
BATCH_BYTES = 1 << 20
MAX_REASON_BYTES = 123  # RFC 6455: a close frame's reason fits in 123 bytes
encoder = msgspec.json.Encoder()


def encode(frame: dict[str, Any]) -> str:
    return encoder.encode(frame).decode()


class EventFrame:
    """A journal entry's frame, encoded once however many clients it goes to (and only if one does)."""

    __slots__ = ("entry_id", "entry", "_text")

    def __init__(self, entry: dict[str, Any]) -> None:
        self.entry_id: int = entry["id"]
        self.entry = entry
        self._text: str | None = None

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = encode({"type": "event", "id": self.entry_id, "entry": self.entry})
        return self._text


def short_reason(reason: str) -> str:
    """A close reason cut to what a close frame can carry."""
    data = reason.encode()
    if len(data) <= MAX_REASON_BYTES:
        return reason
    return data[:MAX_REASON_BYTES - 3].decode(errors="ignore") + "..."


class LiveClient:
    def __init__(self, principal: Principal, flt: LiveFilter, send_text: Callable[[str], Awaitable[Any]],
                 close: Callable[[int, str], Awaitable[Any]], *, max_frames: int = 2000, max_bytes: int = 8 << 20,
                 max_held: int = 50_000, ping_interval: float = 20.0, close_timeout: float = 10.0) -> None:
        self.principal = principal
        self.filter = flt
        self.cursor = 0  # the last journal id this client was given or passed over
        self.held: list[EventFrame] | None = None  # live entries kept back while it catches up
        self.closed = False
        self.close_code: int | None = None
        self.finished = asyncio.Event()  # closed, and the close frame sent (or given up on)
        self.on_close: Callable[[LiveClient], None] | None = None
        self.tasks: set[asyncio.Task[Any]] = set()  # catch-up and the like: cancelled on close
        self.max_frames, self.max_bytes, self.max_held = max_frames, max_bytes, max_held
        self.ping_interval, self.close_timeout = ping_interval, close_timeout
        self._send_text, self._close = send_text, close
        self._frames: deque[tuple[str, str]] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._sender: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._sender = asyncio.create_task(self._send_loop(), name=f"live-send-{self.principal.username}")

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    @property
    def queued(self) -> tuple[int, int]:
        return len(self._frames), self._bytes

    # --- filling the outbox --------------------------------------------------------------------------
    def offer(self, kind: str, text: str) -> bool:
        """Queue a frame without waiting; a full outbox ends the connection (4002)."""
        if self.closed:
            return False
        if len(self._frames) >= self.max_frames or self._bytes + len(text) > self.max_bytes:
            self.close(*SLOW)
            return False
        self._frames.append((kind, text))
        self._bytes += len(text)
        if len(self._frames) > self.max_frames // 2 or self._bytes > self.max_bytes // 2:
            self._room.clear()
        self._ready.set()
        return True

    async def put(self, kind: str, text: str) -> bool:
        """Queue a frame from this client's own task, waiting until the outbox is below half full."""
        while not self.closed and self._frames and not self._room.is_set():
            await self._room.wait()
        return self.offer(kind, text)

    def deliver(self, frame: EventFrame) -> None:
        """A journal entry, in id order: held while catching up, then given if the filter takes it."""
        if self.closed or frame.entry_id <= self.cursor:
            return
        if self.held is not None:
            self.held.append(frame)
            if len(self.held) > self.max_held:
                self.close(*SLOW)
            return
        self.cursor = frame.entry_id
        if self.filter.matches_entry(frame.entry):
            self.offer("event", frame.text)

    def release(self, upto: int) -> None:
        """Catch-up is done up to ``upto``: stop holding, hand over the held entries after it."""
        held, self.held = self.held or [], None
        self.cursor = max(self.cursor, upto)
        for frame in held:
            self.deliver(frame)

    def set_filter(self, flt: LiveFilter) -> None:
        """Replace the filter; it applies to every frame queued after this call (not to past entries)."""
        self.filter = flt

    # --- draining it ---------------------------------------------------------------------------------
    async def _send_loop(self) -> None:
        try:
            while not self.closed:
                if not self._frames:
                    self._ready.clear()
                    try:  # not wait_for: its extra task would delay the wake-up past the fan-out's next yield
                        async with asyncio.timeout(self.ping_interval):
                            await self._ready.wait()
                    except TimeoutError:
                        self.offer("ping", encode({"type": "ping", "ts": dt.datetime.now(dt.timezone.utc)}))
                    continue
                kind, text = self._frames.popleft()
                self._bytes -= len(text)
                if kind == "event" and self._frames and self._frames[0][0] == "event":
                    kind, text = "events", self._batch(text)
                if len(self._frames) <= self.max_frames // 2 and self._bytes <= self.max_bytes // 2:
                    self._room.set()
                await self._send_text(text)
                FRAMES.labels(kind).inc()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the connection is gone: nothing more to send it
            log.debug("live send failed", extra={"user": self.principal.username, "error": f"{type(exc).__name__}: {exc}"})
            self.close(None, "", "connection_lost")

    def _batch(self, first: str) -> str:
        """Event frames waiting together (a burst: a power cut raises hundreds of alarms at once) go out as
        one ``events`` frame, up to BATCH_EVENTS of them or BATCH_BYTES: a WebSocket message costs the
        same whether it carries one entry or a hundred, and a burst reaches 50 screens 50 times faster.
        The frames are already encoded: they are joined, not re-encoded."""
        texts, size = [first], len(first)
        while self._frames and self._frames[0][0] == "event" and len(texts) < BATCH_EVENTS and size < BATCH_BYTES:
            _, text = self._frames.popleft()
            self._bytes -= len(text)
            texts.append(text)
            size += len(text)
        return '{"type":"events","events":[' + ",".join(texts) + "]}"

    # --- ending it -----------------------------------------------------------------------------------
    def close(self, code: int | None, reason: str, label: str, detail: str | None = None) -> None:
        """End the connection (idempotent). ``code`` None: the peer is already gone, send nothing. ``detail``
        goes out first in an error frame (a close reason is cut at 123 bytes)."""
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        DISCONNECTS.labels(label).inc()
        self._frames.clear()
        self._bytes = 0
        self._room.set()
        self.held = None
        if self.on_close is not None:
            self.on_close(self)
        current = asyncio.current_task()
        for task in [self._sender, *self.tasks]:
            if task is not None and task is not current:
                task.cancel()
        if code is None:
            self.finished.set()
        else:
            closing = asyncio.create_task(self._close_socket(code, reason, detail))
            self.tasks.add(closing)

    async def _close_socket(self, code: int, reason: str, detail: str | None) -> None:
        try:
            async with asyncio.timeout(self.close_timeout):  # a peer that never reads never gets it
                if self._sender is not None:
                    await asyncio.gather(self._sender, return_exceptions=True)
                if detail is not None:
                    await self._send_text(encode({"type": "error", "code": code, "detail": detail}))
                await self._close(code, short_reason(reason))
        except Exception as exc:
            log.debug("live close not sent", extra={"user": self.principal.username, "error": f"{type(exc).__name__}: {exc}"})
        finally:
            self.finished.set()

    async def wait_closed(self) -> None:
        """Wait for the sender and the other tasks to end (after ``close``)."""
        tasks = [t for t in [self._sender, *self.tasks] if t is not None and t is not asyncio.current_task()]
        await asyncio.gather(*tasks, return_exceptions=True)
