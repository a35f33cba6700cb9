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

# --- Interventions: citizens' requests and work orders ----------------------------------------------
# Who reads citizens' requests (their public part): the control room, the switchboard, the DPO.
REQUEST_READERS = frozenset({Role.ADMIN, Role.SUPERVISOR, Role.OPERATOR, Role.POLICE, Role.SERVICE_COORDINATOR,
                             Role.SWITCHBOARD, Role.READ_ONLY, Role.DPO})
# Who logs a request for a citizen (a phone call, a visit): the switchboard first.
REQUEST_TAKERS = frozenset({Role.ADMIN, Role.SUPERVISOR, Role.OPERATOR, Role.SERVICE_COORDINATOR, Role.SWITCHBOARD})
# Who sees the requester's name, phone and e-mail: those who call back or audit (and the coordinator of the
# request's own service, checked per request). Operators, the police and field teams do not need them.
PERSONAL_DATA_READERS = frozenset({Role.ADMIN, Role.SUPERVISOR, Role.SWITCHBOARD, Role.DPO})
# Who reads work orders (a field agent only his team's, checked per order).
WORK_ORDER_READERS = REGISTRY_READERS | {Role.DPO}
# Who may open a work order (by hand, from an alarm or a request); dispatching is checked per order.
WORK_ORDER_CREATORS = frozenset({Role.ADMIN, Role.SUPERVISOR, Role.OPERATOR, Role.SERVICE_COORDINATOR})
# Who acts on work orders: dispatchers and the field teams (each checked against the order).
WORK_ORDER_ACTORS = frozenset({Role.ADMIN, Role.SUPERVISOR, Role.OPERATOR, Role.SERVICE_COORDINATOR, Role.FIELD_AGENT})
TEAM_MANAGERS = frozenset({Role.ADMIN, Role.SUPERVISOR, Role.SERVICE_COORDINATOR})

# --- Commands to equipment ---------------------------------------------------------------------------
# Who may ask for commands at all; each command kind then names its own roles (equipment/catalog.toml).
COMMANDERS = frozenset({Role.ADMIN, Role.SUPERVISOR, Role.OPERATOR, Role.POLICE, Role.SERVICE_COORDINATOR})
# Who reads commands and their outcomes (restricted equipment's only for public-safety roles).
COMMAND_READERS = COMMANDERS | {Role.READ_ONLY, Role.DPO}
