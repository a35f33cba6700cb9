"""Who may send what, and what a command's parameters must be (pure).

Each command kind lists in the catalogue the roles that may send it; public-safety equipment stays with
the roles that see it; a service coordinator commands his own service's equipment only. Parameters are
typed by the catalogue: an unknown one, a missing one or a value out of range ("level_pct: 130 is above
the maximum 100") is refused before anything is written.
"""

from __future__ import annotations

from typing import Any, Mapping

from citypilot.auth.roles import Role, sees_restricted
from citypilot.equipment.catalog import Catalog, CommandSpec, FieldError, KindSpec

from .lifecycle import CommandError

APPROVERS = frozenset({Role.ADMIN, Role.SUPERVISOR})  # who may be the second person
MAX_REASON = 500


def command_spec(catalog: Catalog, kind: str, command: str) -> tuple[KindSpec, CommandSpec]:
    spec = catalog.kinds.get(kind)
    if spec is None:
        raise CommandError(422, f"unknown kind {kind!r}", field="kind")
    for c in spec.commands:
        if c.name == command:
            return spec, c
    known = ", ".join(c.name for c in spec.commands) or "none"
    raise CommandError(422, f"{kind} takes no command {command!r} (its commands: {known})", code="unknown-command",
                       field="command")


def check_role(kind: KindSpec, command: CommandSpec, role: str) -> None:
    if kind.restricted and not sees_restricted(role):
        raise CommandError(403, f"{kind.name} is public-safety equipment: the {role} role may not command it",
                           code="forbidden")
    if role not in command.roles:
        raise CommandError(403, f"the {role} role may not send {command.name} to a {kind.name} "
                                f"(allowed: {', '.join(command.roles)})", code="forbidden")


def check_service(role: str, service: str | None, asset_service: str, asset_id: str) -> str | None:
    """A service coordinator acts for his service: why this asset is not his, or None."""
    if role == Role.SERVICE_COORDINATOR and asset_service != service:
        return f"{asset_id} belongs to the {asset_service} service, not to {service}"
    return None


def check_params(command: CommandSpec, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters in their canonical types, or CommandError naming the field."""
    if not isinstance(params, Mapping):
        raise CommandError(422, "params must be an object", field="params")
    spec = command.param
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise CommandError(422, f"{command.name} takes no parameter {', '.join(unknown)}"
                                f" (it takes: {', '.join(spec) or 'none'})", field=f"params.{unknown[0]}")
    out: dict[str, Any] = {}
    for name, field_spec in spec.items():
        if name not in params or params[name] is None:
            if field_spec.required:
                raise CommandError(422, f"params.{name}: required", field=f"params.{name}")
            continue
        try:
            out[name] = field_spec.coerce(params[name])
        except FieldError as exc:
            raise CommandError(422, f"params.{name}: {exc}", field=f"params.{name}") from None
    return out


def needs_approval(command: CommandSpec, assets: int, threshold: int) -> bool:
    """The most sensitive commands, and any batch larger than the threshold, need a second person."""
    return command.approval or assets > threshold


def needs_confirmation(command: CommandSpec, assets: int) -> bool:
    """Sensitive commands, and any action on more than one asset (a street, a zone), are confirmed."""
    return command.confirm or assets > 1
