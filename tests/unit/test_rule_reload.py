"""An administrator's edit to the rule files: taken when valid, refused (the rules in force kept) when not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from citypilot.alarms.rules import RuleError
from citypilot.alarms.rules_source import RuleSource
from citypilot.equipment.catalog import default_catalog

GOOD = '''[[rule]]
id = "dark"
kind = "street_light"
type = "dark"
severity = "minor"
title = "Dark"
when = "power_state == 'off'"
'''


def touch(path: Path, text: str, bump: int) -> None:
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + bump * 1_000_000_000))


def test_a_valid_edit_is_taken_and_a_broken_one_refused(tmp_path: Path):
    rules_file = tmp_path / "lighting.toml"
    touch(rules_file, GOOD, 0)
    source = RuleSource(tmp_path, default_catalog())
    assert [r.id for r in source.rules.rules] == ["dark"] and source.version == 1
    assert source.poll() is False  # nothing changed

    touch(rules_file, GOOD.replace("power_state == 'off'", "power_stat == 'off'"), 1)
    assert source.poll() is False
    assert source.rules.rules[0].when.text == "power_state == 'off'"  # still in force
    assert source.last_error.startswith(f"{rules_file}:7:") and "power_stat" in source.last_error
    assert source.describe()["last_error"] == source.last_error

    touch(rules_file, GOOD.replace("severity = \"minor\"", "severity = \"major\""), 2)
    assert source.poll() is True and source.version == 2 and source.last_error is None
    assert source.rules.rules[0].severity == "major"

    touch(tmp_path / "more.toml", "[[rule]\nid = 1", 3)  # a TOML syntax error in a new file
    assert source.poll() is False and "more.toml:1:" in source.last_error
    assert [r.id for r in source.rules.rules] == ["dark"]


def test_a_broken_set_stops_the_start(tmp_path: Path):
    touch(tmp_path / "x.toml", GOOD.replace("street_light", "street_lamp"), 0)
    with pytest.raises(RuleError, match="x.toml:3:"):
        RuleSource(tmp_path, default_catalog())
    with pytest.raises(RuleError, match="does not exist"):
        RuleSource(tmp_path / "missing", default_catalog())
