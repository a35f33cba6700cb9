"""``citypilot rules``: check alarm rule files before installing them.

A rule file that fails to load is refused by the running control centre (the rules in force stay), so
administrators check a file here first and read the same error, with its file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from citypilot.alarms.rules import RuleError, default_rules_dir, load_rules
from citypilot.equipment.catalog import default_catalog

from .common import fail

rules_app = typer.Typer(help="Alarm rules: check rule files against the equipment catalogue.", no_args_is_help=True)


@rules_app.callback()
def _group() -> None:
    """Alarm rules: check rule files against the equipment catalogue."""


@rules_app.command()
def check(
    paths: Optional[List[Path]] = typer.Argument(
        None, help="Rule files and directories (their *.toml files). Default: the rules shipped with citypilot."),
) -> None:
    """Load rule files as the control centre would, and say OK or the first error (file:line: reason)."""
    targets = list(paths) if paths else [default_rules_dir()]
    try:
        ruleset = load_rules(targets, default_catalog())
    except RuleError as exc:
        fail(str(exc), 1)
    typer.echo(f"{len(ruleset.rules)} rules, {len(ruleset.correlations)} correlations, {len(ruleset.storms)} storms "
               f"in {len(ruleset.files)} files: OK")
