"""The roles of the people who use the control centre, and what each may see.

Least privilege: each route names the roles it allows (see ``citypilot.api.security``); nothing is
allowed by default. Public-safety equipment (cameras, building alarm panels) and its data belong to
the municipal police: only police, supervisors and administrators see it.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"                              # accounts, configuration, registry
    SUPERVISOR = "supervisor"                    # heads the control room; sees everything operational
    OPERATOR = "operator"                        # watches the live city, acknowledges alarms, sends commands
    POLICE = "police"                            # municipal police / video operators: public safety
    SERVICE_COORDINATOR = "service_coordinator"  # one service's coordinator (lighting, roads, ...)
    FIELD_AGENT = "field_agent"                  # a field team on a tablet
    SWITCHBOARD = "switchboard"                  # logs citizens' calls as requests
    DPO = "dpo"                                  # data protection officer / IT security: audits
    READ_ONLY = "read_only"                      # sees the operational picture, changes nothing


ROLES: tuple[str, ...] = tuple(r.value for r in Role)

# Roles that may see restricted (public-safety) equipment and its data.
PUBLIC_SAFETY_ROLES = frozenset({Role.ADMIN, Role.SUPERVISOR, Role.POLICE})

# Everyone who works in the control room and may read the equipment registry.
REGISTRY_READERS = frozenset({Role.ADMIN, Role.SUPERVISOR, Role.OPERATOR, Role.POLICE, Role.SERVICE_COORDINATOR,
                              Role.FIELD_AGENT, Role.SWITCHBOARD, Role.READ_ONLY})
# Who may change identity sheets (create, update, retire, import).
REGISTRY_EDITORS = frozenset({Role.ADMIN, Role.SUPERVISOR})
ACCOUNT_ADMINS = frozenset({Role.ADMIN})

# Roles tied to one service of the city: their accounts must name it.
ROLES_WITH_SERVICE = frozenset({Role.SERVICE_COORDINATOR, Role.FIELD_AGENT})


def sees_restricted(role: str) -> bool:
    """May this role see public-safety equipment (cameras, building alarm panels)?"""
    return role in PUBLIC_SAFETY_ROLES

# Who may act on alarms (acknowledge, clear, shelve, comment). A service coordinator acts on the
# alarms his service is told about; the police on public-safety ones as on the others it sees.
ALARM_HANDLERS = frozenset({Role.ADMIN, Role.SUPERVISOR, Role.OPERATOR, Role.POLICE, Role.SERVICE_COORDINATOR})
# Who may read the event journal: the control room, and the DPO who audits it.
JOURNAL_READERS = REGISTRY_READERS | {Role.DPO}
