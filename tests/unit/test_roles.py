"""Roles: least privilege, and public-safety equipment seen by police, supervisors and admins only."""

from __future__ import annotations

import pytest

from citypilot.auth.roles import (
    ACCOUNT_ADMINS,
    REGISTRY_EDITORS,
    REGISTRY_READERS,
    ROLES,
    ROLES_WITH_SERVICE,
    Role,
    sees_restricted,
)
from citypilot.equipment.catalog import default_catalog


def test_roles_are_the_nine_documented_ones():
    assert ROLES == ("admin", "supervisor", "operator", "police", "service_coordinator", "field_agent",
                     "switchboard", "dpo", "read_only")


@pytest.mark.parametrize("role", ["admin", "supervisor", "police", Role.POLICE])
def test_public_safety_roles_see_restricted_equipment(role):
    assert sees_restricted(role) is True


@pytest.mark.parametrize("role", ["operator", "service_coordinator", "field_agent", "switchboard", "dpo",
                                  "read_only", Role.OPERATOR, "", "Police", "POLICE", "root", "police "])
def test_other_roles_and_unknown_names_do_not(role):
    assert sees_restricted(role) is False


def test_commands_on_restricted_equipment_are_only_for_roles_that_see_it():
    catalog = default_catalog()
    restricted = catalog.restricted_kinds()
    assert restricted  # cameras and building alarm panels
    for kind in restricted:
        for command in catalog.kind(kind).commands:
            assert all(sees_restricted(role) for role in command.roles), (kind, command.name, command.roles)


def test_registry_permissions():
    assert REGISTRY_EDITORS <= REGISTRY_READERS
    assert ACCOUNT_ADMINS == {"admin"}
    assert "operator" not in REGISTRY_EDITORS
    assert ROLES_WITH_SERVICE == {"service_coordinator", "field_agent"}
    assert set(REGISTRY_READERS) | set(ACCOUNT_ADMINS) | {"dpo"} == set(ROLES)
