"""Alarm rules: the expression language (safety, types, three-valued logic) and the rule files."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from citypilot.alarms.expressions import (
    MAX_DEPTH,
    MAX_LENGTH,
    ExpressionError,
    compile_expression,
)
from citypilot.alarms.rules import (
    SEVERITIES,
    RuleError,
    RuleSet,
    default_rules_dir,
    kind_fields,
    load_default_rules,
    load_rules,
    parse_duration,
    parse_rules,
)
from citypilot.cli.rules import rules_app
from citypilot.equipment.catalog import FieldSpec, default_catalog

CATALOG = default_catalog()
LIGHT = kind_fields(CATALOG.kind("street_light"))
PARKING = kind_fields(CATALOG.kind("parking_sensor"))


def compile_light(text: str):
    return compile_expression(text, LIGHT)


def refused(text: str, fields=LIGHT) -> ExpressionError:
    with pytest.raises(ExpressionError) as info:
        compile_expression(text, fields)
    assert info.value.column >= 1
    return info.value


# --- the expression language: what is refused -----------------------------------------------------

@pytest.mark.parametrize("text, says", [
    ("__import__('os')", "calling __import__()"),
    ("__import__('os').system('ls') == 0", "calling"),
    ("open('/etc/passwd') == 'x'", "calling open()"),
    ("eval('1') == 1", "calling eval()"),
    ("fault.upper() == 'NONE'", "calling fault.upper()"),
    ("fault.__class__ == 'x'", "attribute access"),
    ("().__class__.__bases__ == 1", "attribute access"),
    ("x[0] == 1", "a subscript"),
    ("fault[0] == 'n'", "a subscript"),
    ("lambda: 1", "a lambda function"),
    ("2**10 > power_w", "the power operator **"),
    ("power_w // 2 > 1", "integer division //"),
    ("power_w % 2 == 0", "the modulo operator %"),
    ("power_w & 1 == 1", "the bitwise operator &"),
    ("power_w | 1 == 1", "the bitwise operator |"),
    ("~power_w > 0", "the bitwise operator ~"),
    ("power_w << 2 > 1", "the bitwise operator <<"),
    ("+power_w > 0", "unary +"),
    ("f'{fault}' == 'none'", "an f-string"),
    ("(y := 1) == 1", "an assignment (:=)"),
    ("[x for x in [1]] == 1", "a comprehension"),
    ("any(x for x in [1])", "calling any()"),
    ("{'a': 1} == 1", "a dictionary"),
    ("{1, 2} == 1", "a set"),
    ("power_w if fault else 1", "a conditional expression"),
    ("power_w is None", "'is' (use ==)"),
    ("power_w is not None", "'is not' (use !=)"),
    ("b'x' == fault", "a bytes literal"),
    ("1j == power_w", "a complex number"),
    ("abs(x=power_w) > 1", "no named arguments"),
    ("[1] == power_w", "only allowed after 'in'"),
    ("power_w in power_w", "needs a list of values"),
    ("fault in [fault]", "only literal values"),
    ("fault in []", "is empty"),
    ("min(power_w) > 1", "two numbers or more"),
    ("abs(power_w, 1) > 1", "exactly one number"),
    ("abs > 1", "abs is a function"),
])
def test_refused_constructs_name_the_construct(text, says):
    error = refused(text)
    assert says in error.reason, error.reason


def test_refusal_points_at_the_column_of_the_construct():
    error = refused("fault == 'none' and power_w[0] > 1")
    assert error.column == len("fault == 'none' and ") + 1
    assert "a subscript" in error.reason
    assert str(error).startswith(f"column {error.column}: ")


def test_syntax_errors_carry_a_column():
    error = refused("power_w > 1 and")
    assert error.reason.startswith("syntax error")
    assert error.column == len("power_w > 1 and") + 1
    assert refused("  é == = 1").column == 8  # characters, not UTF-8 bytes, and the leading blanks count


def test_columns_count_characters_not_bytes():
    error = refused("'été' == power_state or 'ça' != street_type or x[0] == 1")
    assert "'été' is not a value of power_state" in error.reason and error.column == 1
    error = refused("power_w > 1 or 'ça va' != 'été' or x[0] == 1")
    assert error.column == len("power_w > 1 or 'ça va' != 'été' or ") + 1


def test_empty_too_long_and_too_deep_expressions_are_refused():
    assert "empty" in refused("   ").reason
    assert str(MAX_LENGTH) in refused("power_w > 1 and " * 100 + "true").reason
    assert "nested too deeply" in refused("-" * (MAX_DEPTH + 5) + "power_w > 1").reason
    assert "nested too deeply" in refused("power_w" + " + 1" * 30 + " > 1").reason
    assert "nested too deeply" in refused("-" * 980 + "power_w > 1").reason
    refused("(" * 495 + "power_w > 1" + ")" * 495)  # the parser's own limit: refused, not a crash
    compile_light("(" * 50 + "power_w > 1" + ")" * 50)  # parentheses themselves are not levels


def test_nul_bytes_and_garbage_are_refused_cleanly():
    refused("power_w > 1\x00")
    refused(")))")
    refused("`x`")


# --- names and types ------------------------------------------------------------------------------

def test_unknown_name_lists_the_known_fields_sorted_with_a_suggestion():
    error = refused("powr_w > 1")
    assert "unknown field 'powr_w'" in error.reason
    assert "did you mean power_w?" in error.reason
    listed = error.reason.split("(known: ")[1].rstrip(")").split(", ")
    assert listed == sorted(LIGHT)


def test_unknown_name_list_is_truncated_for_large_kinds():
    fields = {f"field_{i:03d}": FieldSpec(name=f"field_{i:03d}", type="number") for i in range(100)}
    error = refused("nothing_like_these > 1", fields)
    assert "(75 more)" in error.reason and "field_099" not in error.reason


@pytest.mark.parametrize("text, says", [
    ("fault == 3", "fault is text, compared with a number (3)"),
    ("power_w == 'high'", "power_w is a number, compared with text ('high')"),
    ("presence_detection == 1", "presence_detection is true or false, compared with a number"),
    ("power_w > fault", "power_w is a number, compared with text (fault)"),
    ("power_w and fault == 'none'", "'and' needs true or false on each side: power_w is a number"),
    ("fault == 'none' or dimming_pct", "'or' needs true or false on each side: dimming_pct is a number"),
    ("not power_w", "'not' needs true or false: power_w is a number"),
    ("-fault == 1", "'-' needs a number: fault is text"),
    ("fault + 1 > 2", "'+' needs numbers: fault is text"),
    ("presence_detection * 2 > 1", "'*' needs numbers: presence_detection is true or false"),
    ("abs(fault) > 1", "abs() needs numbers: fault is text"),
    ("presence_detection < true", "cannot be ordered with '<'"),
    ("fault < 'none'", "ordering them with '<' means nothing"),
    ("power_w > null", "comparing with null is never true"),
    ("fault == None", "comparing with null is never true"),
    ("fault in ['none', 3]", "fault is text, compared with a number (3)"),
    ("power_w + null > 1", "'+' needs numbers: null is unknown"),
])
def test_type_mismatches_name_both_sides(text, says):
    assert says in refused(text).reason


@pytest.mark.parametrize("text, bad", [
    ("fault == 'lamp_faillure'", "'lamp_faillure'"),
    ("'lamp_faillure' != fault", "'lamp_faillure'"),
    ("fault in ['none', 'lamp_faillure']", "'lamp_faillure'"),
    ("fault not in ['LAMP_FAILURE']", "'LAMP_FAILURE'"),
])
def test_enum_typos_are_refused_with_the_allowed_values(text, bad):
    error = refused(text)
    assert error.reason == f"{bad} is not a value of fault: none, lamp_failure, driver_failure, communication"
    assert text[error.column - 1:].startswith(bad)


@pytest.mark.parametrize("text", ["power_w", "fault", "power_w + 1", "abs(power_w)", "'text'", "3", "null"])
def test_the_expression_must_be_true_or_false(text):
    assert "the expression must be true or false" in refused(text).reason


def test_accepted_expressions_and_the_names_they_read():
    for text in ["fault == 'lamp_failure'", "fault in ['lamp_failure', 'driver_failure']", "not presence_detection",
                 "presence_detection == true", "presence_detection != False", "0 < dimming_pct <= 50",
                 "abs(power_w - lamp_power_w) > 10", "max(power_w, 1, 2) >= min(lamp_power_w, 3)",
                 "-power_w < -1", "power_w / 2 > 1.5", "true", "fault == 'none' and (power_w > 1 or not true)",
                 "fault not in ('none',)", "street_type == 'crossing' and dimming_pct < safety_floor_pct"]:
        compile_light(text)
    expression = compile_light("abs(power_w - lamp_power_w) > 10 and fault == 'none'")
    assert expression.names == frozenset({"power_w", "lamp_power_w", "fault"})
    assert expression.text == "abs(power_w - lamp_power_w) > 10 and fault == 'none'"


def test_constant_division_by_zero_is_refused_at_load():
    assert "cannot be computed" in refused("power_w > 1 / 0").reason


def test_date_fields_compare_with_iso_dates():
    fields = {"installed": FieldSpec(name="installed", type="date")}
    expression = compile_expression("installed < '2020-01-01'", fields)
    assert expression({"installed": "2019-05-01"}) is True
    assert expression({"installed": "2021-05-01"}) is False
    assert expression.truth({"installed": "not a date"}) is None
    assert "is not a date" in refused("installed < '2020-13-01'", fields).reason
    assert "compared with a number" in refused("installed < 2020", fields).reason


def test_multi_line_expressions_are_read_as_one_line():
    expression = compile_light("fault == 'none'\n  and power_w > 3")
    assert expression({"fault": "none", "power_w": 4}) is True
    assert refused("fault == 'none' and\n  x > 1").column == len("fault == 'none' and\n  ") + 1


# --- three-valued logic at run time ---------------------------------------------------------------

@pytest.mark.parametrize("text, values, truth", [
    ("power_w > 10", {"power_w": 11}, True),
    ("power_w > 10", {"power_w": 10}, False),
    ("power_w > 10", {}, None),
    ("power_w > 10", {"power_w": None}, None),
    ("power_w > 10", {"power_w": "11"}, None),           # a device sent text: unknown, not an error
    ("power_w > 10", {"power_w": True}, None),           # a boolean is not a number
    ("power_w > 10", {"power_w": math.nan}, None),
    ("power_w > 10", {"power_w": math.inf}, True),
    ("power_w > 10", {"power_w": [11]}, None),
    ("power_w > 10", {"power_w": 10**400}, True),
    ("fault == 'none'", {"fault": 3}, None),
    ("presence_detection", {"presence_detection": 1}, None),
    ("presence_detection", {"presence_detection": True}, True),
    ("not presence_detection", {}, None),
    ("not presence_detection", {"presence_detection": False}, True),
    # and / or: SQL's three-valued logic
    ("fault == 'none' and power_w > 10", {"fault": "lamp_failure"}, False),
    ("fault == 'none' and power_w > 10", {"fault": "none"}, None),
    ("fault == 'none' and power_w > 10", {"fault": "none", "power_w": 11}, True),
    ("power_w > 10 and fault == 'none'", {"fault": "lamp_failure"}, False),
    ("fault == 'none' or power_w > 10", {"power_w": 11}, True),
    ("fault == 'none' or power_w > 10", {"power_w": 5}, None),
    ("fault == 'none' or power_w > 10", {"fault": "lamp_failure", "power_w": 5}, False),
    ("power_w > 10 or dimming_pct > 10 or fault == 'none'", {"fault": "none"}, True),
    ("power_w > 10 and dimming_pct > 10 and fault == 'none'", {"fault": "lamp_failure"}, False),
    ("power_w > 10 and dimming_pct > 10 and fault == 'none'", {"power_w": 11, "dimming_pct": 11}, None),
    # arithmetic
    ("power_w / dimming_pct > 1", {"power_w": 5, "dimming_pct": 0}, None),   # division by zero: unknown
    ("power_w / dimming_pct > 1", {"power_w": 5, "dimming_pct": 2}, True),
    ("power_w + dimming_pct > 1", {"power_w": 5}, None),
    ("power_w / 3 > 1", {"power_w": 10**400}, None),   # no float holds it
    ("power_w - dimming_pct > 1", {"power_w": math.inf, "dimming_pct": math.inf}, None),
    ("abs(power_w) > 1", {"power_w": -5}, True),
    ("max(power_w, dimming_pct) > 10", {"power_w": 5, "dimming_pct": 20}, True),
    ("min(power_w, dimming_pct) > 10", {"power_w": 5}, None),
    ("-power_w < 0", {"power_w": 1}, True),
    # in and chains
    ("fault in ['lamp_failure', 'driver_failure']", {"fault": "driver_failure"}, True),
    ("fault in ['lamp_failure', 'driver_failure']", {"fault": "none"}, False),
    ("fault not in ['none']", {}, None),
    ("fault not in ['none']", {"fault": "none"}, False),
    ("power_w in [1, 2.5]", {"power_w": 1.0}, True),
    ("0 < power_w < 10", {"power_w": 5}, True),
    ("0 < power_w < 10", {"power_w": 50}, False),
    ("0 < power_w < dimming_pct", {"power_w": -1}, False),    # false on one link: false whatever the rest
    ("0 < power_w < dimming_pct", {"power_w": 5}, None),
    ("true", {}, True),
    ("false or true", {}, True),
])
def test_three_valued_evaluation(text, values, truth):
    expression = compile_light(text)
    assert expression.truth(values) is truth
    assert expression(values) is (truth is True)


def test_evaluation_never_raises_even_on_garbage():
    expression = compile_light("fault == 'none' and power_w > 1")
    assert expression(None) is False  # type: ignore[arg-type]
    assert expression.truth(None) is None  # type: ignore[arg-type]
    assert expression("not a mapping") is False  # type: ignore[arg-type]

    class Hostile(dict):
        def get(self, *args: Any) -> Any:
            raise RuntimeError("boom")
    assert expression(Hostile()) is False


def test_hysteresis_expressions():
    when = compile_expression("battery_pct < 10", PARKING)
    clear = compile_expression("battery_pct > 15", PARKING)
    readings = [20, 9, 12, 9.5, 14, 16, 11]
    active, history = False, []
    for level in readings:
        values = {"battery_pct": level}
        if not active and when(values):
            active = True
        elif active and clear(values):
            active = False
        history.append(active)
    assert history == [False, True, True, True, True, False, False]
    assert clear({}) is False  # an unknown level never clears


# --- hypothesis: no input ever makes evaluation raise ---------------------------------------------

ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["none", "lamp_failure", "driver_failure", "on", "off", "LED"]),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.dates(), st.binary(max_size=4),
)
EXPRESSIONS = [
    "fault == 'lamp_failure'", "fault != 'none' or power_state == 'off'", "not presence_detection",
    "power_w / dimming_pct > 1.5", "abs(power_w - lamp_power_w) > 10 and fault in ['none', 'communication']",
    "0 < dimming_pct < safety_floor_pct", "max(power_w, burning_hours, 1) * 2 - min(dimming_pct, 3) >= 0",
    "-power_w < 0 or not (presence_detection == true)", "street_type not in ['stairs', 'crossing']",
]
COMPILED = [compile_light(text) for text in EXPRESSIONS]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(sorted(LIGHT)), ANY_VALUE))
def test_random_values_of_any_type_never_raise(values):
    for expression in COMPILED:
        assert expression(values) in (True, False)
        assert expression.truth(values) in (True, False, None)


def _right_value(spec: FieldSpec) -> st.SearchStrategy[Any]:
    if spec.enum is not None:
        return st.sampled_from(spec.enum)
    if spec.type == "boolean":
        return st.booleans()
    if spec.type == "string":
        return st.text(max_size=10)
    return st.floats(min_value=spec.min if spec.min is not None else -1e6,
                     max_value=spec.max if spec.max is not None else 1e6, allow_nan=False)


RIGHT_VALUES = st.fixed_dictionaries({name: _right_value(spec) for name, spec in LIGHT.items()})


@settings(max_examples=300)
@given(RIGHT_VALUES)
def test_right_typed_values_give_what_python_gives(values):
    """With every field known and of its type, the result is plain Python's (no division here)."""
    texts = ["power_w > 10 and (dimming_pct < 50 or fault == 'none')",
             "fault in ['lamp_failure', 'driver_failure'] or not presence_detection",
             "0 <= dimming_pct < safety_floor_pct", "abs(power_w - lamp_power_w) > 10",
             "max(power_w, 1) - min(dimming_pct, 2) * 3 >= 0"]
    for text in texts:
        expected = bool(eval(text, {"__builtins__": {}, "abs": abs, "min": min, "max": max}, dict(values)))  # noqa: S307
        assert compile_light(text).truth(values) is expected


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=60),
                 st.lists(st.sampled_from(["power_w", "fault", "'none'", "1", "2.5", "true", "null", "and", "or",
                                           "not", "==", "<", "+", "/", "(", ")", "[", "]", ",", "in", "abs", ".",
                                           "**", "lambda", ":", "x", "'lamp_failure'"]),
                          max_size=12).map(" ".join)))
def test_random_text_compiles_or_is_refused_with_an_expression_error(text):
    try:
        expression = compile_light(text)
    except ExpressionError as exc:
        assert exc.column >= 1 and exc.reason
        return
    assert expression({"power_w": 3, "fault": "none"}) in (True, False)


# --- durations ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400),
                                           ("7d", 604800), ("1h30m", 5400), ("1s", 1), (" 5M ", 300)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "30x", "m30", "1.5h", "-5m", "0s", "8d", "169h", "1m1h", "30 m"])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_parse_duration_refuses_numbers():
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(30)  # type: ignore[arg-type]


# --- rule files -----------------------------------------------------------------------------------

HEADER = """\
# comment
[[rule]]
id = "light-lamp"
kind = "street_light"
type = "lamp_failure"
severity = "minor"
title = "Lamp failure at {name} ({lamp_technology})"
"""


def parse(text: str, path: str = "rules.toml"):
    return parse_rules(textwrap.dedent(text), path, CATALOG)


def error_of(text: str, path: str = "rules.toml") -> RuleError:
    with pytest.raises(RuleError) as info:
        parse(text, path)
    assert str(info.value) == f"{info.value.path}:{info.value.line}: {info.value.reason}"
    return info.value


def test_a_full_rule_parses():
    rules, correlations, storms = parse(HEADER + 'when = "fault == \'lamp_failure\'"\nclear_when = "fault == \'none\'"\n'
                                        'for = "90s"\nnotify = ["lighting", "police"]\n')
    assert not correlations and not storms
    (rule,) = rules
    assert (rule.id, rule.kind, rule.type, rule.severity) == ("light-lamp", "street_light", "lamp_failure", "minor")
    assert rule.for_s == 90.0 and rule.notify == ("lighting", "police") and rule.source == "rules.toml:2"
    assert rule.when({"fault": "lamp_failure"}) and rule.clear_when({"fault": "none"})
    assert rule.on_event == () and rule.clear_event == () and rule.on_connectivity is None
    assert rule.names() == frozenset({"fault", "lamp_technology"})


def test_notify_defaults_to_the_kinds_service():
    (rule,), _, _ = parse(HEADER + 'when = "fault == \'none\'"\n')
    assert rule.notify == ("lighting",) and rule.for_s == 0.0 and rule.clear_when is None


def test_unknown_attribute_gives_the_line_of_when_and_the_column():
    error = error_of(HEADER + 'when = "fault == \'none\' and powr_w > 1"\n')
    assert error.line == 8 and error.path == "rules.toml"
    assert "when, column 21: unknown field 'powr_w'" in error.reason


def test_clear_when_errors_give_its_line():
    error = error_of(HEADER + 'when = "fault == \'none\'"\nnotify = ["lighting"]\nclear_when = "fault == 3"\n')
    assert error.line == 10 and "clear_when, column 10: fault is text, compared with a number" in error.reason


def test_type_mismatch_enum_typo_and_non_boolean_in_a_file():
    assert "fault is text, compared with a number" in error_of(HEADER + 'when = "fault == 1"\n').reason
    assert "'lamp_faillure' is not a value of fault" in error_of(HEADER + 'when = "fault == \'lamp_faillure\'"\n').reason
    assert "must be true or false" in error_of(HEADER + 'when = "power_w"\n').reason


def test_toml_syntax_error_gives_its_line():
    error = error_of(HEADER + 'when = "fault == \'none\'"\nnotify = [lighting]\n')
    assert error.line == 9 and error.reason.startswith("TOML syntax error")
    assert "(at line" not in error.reason
    error = error_of(HEADER + 'when = "fault == \n')
    assert error.line == 8


def test_missing_key_gives_the_header_line():
    error = error_of(HEADER.replace('severity = "minor"\n', "") + 'when = "fault == \'none\'"\n\n[[rule]]\nid = "b"\n')
    assert error.line == 2 and "missing the required key 'severity'" in error.reason
    error = error_of(HEADER + 'when = "fault == \'none\'"\n\n[[rule]]\nid = "b"\nkind = "street_light"\n')
    assert error.line == 10 and "[[rule]] b: missing the required key 'type'" in error.reason


def test_unknown_key_gives_its_line_and_a_suggestion():
    error = error_of(HEADER + 'when = "fault == \'none\'"\nnotfy = ["lighting"]\n')
    assert error.line == 9 and "unknown key 'notfy' (did you mean notify?)" in error.reason


def test_unknown_top_level_keys_and_single_tables_are_refused():
    assert error_of('version = 1\n').reason.startswith("unknown key 'version'")
    error = error_of('\n[rule]\nid = "x"\n')
    assert error.line == 2 and "[[rule]]" in error.reason
    assert "expected a table" in error_of('rule = [1]\n').reason


@pytest.mark.parametrize("line, says", [
    ('severity = "high"', "severity 'high' must be one of critical, major, minor, warning"),
    ("severity = 1", "severity must be text, got a number"),
    ('kind = "streetlight"', "unknown kind 'streetlight' (did you mean street_light?"),
    ('id = "Light Lamp"', "id 'Light Lamp' must be lowercase letters"),
    ('id = "light-lamp\\n"', "must be lowercase letters"),
    ('type = "Lamp-Failure"', "type 'Lamp-Failure' must be lowercase letters"),
    ('title = ""', "title must be one line"),
    ('title = "' + "x" * 201 + '"', "title must be one line of 1 to 200 characters"),
    ('title = "Lamp {power_w:.1f}"', "without formatting"),
    ('title = "Lamp {}"', "an empty placeholder"),
    ('title = "Lamp {nme}"', "unknown placeholder {nme} (did you mean name?"),
    ('title = "Lamp {power_w"', "title:"),
])
def test_wrong_values_are_refused(line, says):
    key = line.split(" = ")[0]
    text = "\n".join(line if row.startswith(f"{key} = ") else row for row in HEADER.splitlines()) + "\n"
    error = error_of(text + 'when = "fault == \'none\'"\n')
    assert says in error.reason, error.reason
    assert error.line == next(i for i, row in enumerate(text.splitlines(), start=1) if row.startswith(f"{key} = "))


@pytest.mark.parametrize("body, says, line", [
    ('notify = "lighting"\nwhen = "true"', "notify must be a non-empty list", 8),
    ('notify = []\nwhen = "true"', "notify must be a non-empty list", 8),
    ('notify = ["lightning"]\nwhen = "true"', "unknown service 'lightning'", 8),
    ('notify = ["police", "police"]\nwhen = "true"', "the same service twice", 8),
    ('when = "true"\nfor = "5x"', "for: '5x' is not a duration", 9),
    ('when = "true"\nfor = 300', "for: expected a duration", 9),
    ('when = "true"\nfor = "8d"', "out of range", 9),
    ('on_event = ["x"]\nfor = "5m"', "for goes with when, not with on_event", 9),
    ('on_connectivity = "offline"\nfor = "5m"', "for goes with when, not with on_connectivity", 9),
    ('when = "true"\nclear_event = ["x"]', "clear_event goes with on_event", 9),
    ('on_connectivity = "offline"\nclear_when = "true"', "clear_when goes with when or on_event", 9),
    ('when = "true"\non_event = ["x"]', "exactly one trigger, this one has when and on_event", 9),
    ('when = "true"\non_connectivity = "offline"', "exactly one trigger", 9),
    ('notify = ["police"]', "a rule needs a trigger", 2),
    ('on_event = "fire_alarm"', "on_event must be a non-empty list", 8),
    ('on_event = ["Fire Alarm"]', "'Fire Alarm' is not a valid code", 8),
    ('on_event = ["a"]\nclear_event = ["a"]', "a both raises and clears", 9),
    ('on_connectivity = "down"', "on_connectivity 'down' must be one of offline, unreachable", 8),
])
def test_trigger_and_option_errors(body, says, line):
    error = error_of(HEADER + body + "\n")
    assert says in error.reason, error.reason
    assert error.line == line


def test_event_and_connectivity_triggers():
    (rule,), _, _ = parse(HEADER + 'on_event = ["lamp_failure"]\nclear_event = ["lamp_ok"]\nclear_when = "fault == \'none\'"\n')
    assert rule.on_event == ("lamp_failure",) and rule.clear_event == ("lamp_ok",) and rule.when is None
    assert rule.names() == frozenset({"fault", "lamp_technology"})
    (rule,), _, _ = parse(HEADER + 'on_connectivity = "unreachable"\n')  # street lights report through a cabinet
    assert rule.on_connectivity == "unreachable"
    error = error_of(HEADER.replace("street_light", "lighting_cabinet").replace(" ({lamp_technology})", "")
                     + 'on_connectivity = "unreachable"\n')
    assert "never unreachable" in error.reason


def test_title_placeholders_render_with_question_marks_for_missing_values():
    (rule,), _, _ = parse(HEADER.replace("title = \"Lamp failure at {name} ({lamp_technology})\"",
                                         'title = "{{{name}}} at {power_w} W, detection {presence_detection}"')
                          + 'when = "true"\n')
    assert rule.render_title({"name": "SL-1", "power_w": 35.5, "presence_detection": True}) == "{SL-1} at 35.5 W, detection true"
    assert rule.render_title({}) == "{?} at ? W, detection ?"
    assert rule.render_title({"name": None, "power_w": "x" * 500}).startswith("{?} at " + "x" * 79 + "…")
    assert rule.names() == frozenset({"power_w", "presence_detection"})


@settings(max_examples=200)
@given(st.dictionaries(st.sampled_from(["name", "power_w", "presence_detection", "other"]), ANY_VALUE))
def test_titles_render_whatever_the_values(values):
    (rule,), _, _ = parse(HEADER.replace("({lamp_technology})", "{power_w} {presence_detection}") + 'when = "true"\n')
    assert rule.render_title(values).startswith("Lamp failure at ")
    assert rule.render_title({"power_w": 10**5000}) == "Lamp failure at ? ? ?"  # too long to print: unknown


def test_duplicate_id_within_one_file():
    error = error_of(HEADER + 'when = "true"\n\n[[rule]]\nid = "light-lamp"\nkind = "camera"\ntype = "x"\n'
                              'severity = "major"\ntitle = "t"\nwhen = "true"\n')
    assert error.line == 11 and "duplicate id 'light-lamp': already defined at rules.toml:3" in error.reason


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_duplicate_id_across_two_files(tmp_path):
    write(tmp_path, "a.toml", HEADER + 'when = "true"\n')
    write(tmp_path, "b.toml", HEADER.replace("lamp_failure", "other") + 'when = "true"\n')
    with pytest.raises(RuleError) as info:
        load_rules([tmp_path], CATALOG)
    assert info.value.path == str(tmp_path / "b.toml") and info.value.line == 3
    assert f"duplicate id 'light-lamp': already defined at {tmp_path / 'a.toml'}:3" in info.value.reason


def test_duplicate_kind_and_type_across_files(tmp_path):
    write(tmp_path, "a.toml", HEADER + 'when = "true"\n')
    write(tmp_path, "b.toml", HEADER.replace("light-lamp", "light-lamp-2") + 'when = "false"\n')
    with pytest.raises(RuleError) as info:
        load_rules([tmp_path / "a.toml", tmp_path / "b.toml"], CATALOG)
    assert info.value.line == 2 and "alarm type 'lamp_failure' of street_light is already defined" in info.value.reason


CORRELATION = """\
[[correlation]]
id = "cabinet-lights"
kind = "street_light"
types = ["lamp_failure", "driver_failure"]
min_fraction = 0.5
min_count = 5
type = "cabinet_lights_failure"
severity = "major"
title = "{count} of {total} lights failing"
"""


def test_correlation_referencing_an_undefined_type(tmp_path):
    write(tmp_path, "a.toml", HEADER + 'when = "true"\n')
    write(tmp_path, "b.toml", "# correlations\n" + CORRELATION)
    with pytest.raises(RuleError) as info:
        load_rules([tmp_path], CATALOG)
    assert info.value.path == str(tmp_path / "b.toml") and info.value.line == 5
    assert "no [[rule]] of street_light has the type 'driver_failure' (defined: lamp_failure)" in info.value.reason


def test_correlation_types_may_be_defined_in_a_later_file(tmp_path):
    write(tmp_path, "a_correlation.toml", CORRELATION)
    write(tmp_path, "b_rules.toml", HEADER + 'when = "true"\n' + HEADER.replace("light-lamp", "light-driver")
          .replace("lamp_failure", "driver_failure").replace("# comment\n", "") + 'when = "true"\n')
    ruleset = load_rules([tmp_path], CATALOG)
    (correlation,) = ruleset.correlations
    assert correlation.gateway_kinds == ("lighting_cabinet",) and correlation.notify == ("lighting",)
    assert correlation.min_fraction == 0.5 and correlation.min_count == 5
    assert correlation.render_title({"count": 6, "total": 10}) == "6 of 10 lights failing"


@pytest.mark.parametrize("old, new, says", [
    ('kind = "street_light"', 'kind = "lighting_cabinet"', "has no gateway (reported_by)"),
    ("min_fraction = 0.5", "min_fraction = 1.5", "min_fraction must be a number above 0 and at most 1"),
    ("min_fraction = 0.5", "min_fraction = 0", "min_fraction must be a number above 0"),
    ("min_fraction = 0.5", "min_fraction = true", "min_fraction must be a number"),
    ("min_count = 5", "min_count = 1", "min_count must be at least 2"),
    ("min_count = 5", "min_count = 5.0", "min_count must be a whole number"),
    ('title = "{count} of {total} lights failing"', 'title = "{name} failing"', "unknown placeholder {name}"),
    ('types = ["lamp_failure", "driver_failure"]', "types = []", "types must be a non-empty list"),
    ("min_count = 5\n", "", "missing the required key 'min_count'"),
])
def test_correlation_errors(old, new, says):
    assert says in error_of(CORRELATION.replace(old, new)).reason


def test_correlation_type_clashing_with_a_gateway_rule(tmp_path):
    write(tmp_path, "a.toml", HEADER + 'when = "true"\n' + CORRELATION.replace('"lamp_failure", "driver_failure"', '"lamp_failure"'))
    write(tmp_path, "b.toml", '[[rule]]\nid = "cab"\nkind = "lighting_cabinet"\ntype = "cabinet_lights_failure"\n'
                              'severity = "major"\ntitle = "t"\nwhen = "true"\n')
    with pytest.raises(RuleError) as info:
        load_rules([tmp_path], CATALOG)
    assert "alarm type 'cabinet_lights_failure' of lighting_cabinet is already defined" in info.value.reason


STORM = """\
[[storm]]
id = "commune-storm"
by = "commune"
window = "2m"
min_alarms = 20
severity = "major"
title = "Alarm storm in {commune} ({count} alarms)"
"""


def test_storms():
    _, _, (storm,) = parse(STORM)
    assert (storm.by, storm.window_s, storm.min_alarms, storm.type) == ("commune", 120.0, 20, "alarm_storm")
    assert storm.render_title({"commune": "Dijon", "count": 25}) == "Alarm storm in Dijon (25 alarms)"
    _, _, (storm,) = parse(STORM.replace('by = "commune"\n', ""))
    assert storm.by == "commune"
    assert "unknown placeholder {name}" in error_of(STORM.replace("{count} alarms", "{name}")).reason
    assert "by 'street' must be one of commune" in error_of(STORM.replace('by = "commune"', 'by = "street"')).reason
    assert "min_alarms must be at least 2" in error_of(STORM.replace("min_alarms = 20", "min_alarms = 1")).reason
    assert "window:" in error_of(STORM.replace('"2m"', '"2 minutes"')).reason
    assert "unknown key 'notify'" in error_of(STORM + 'notify = ["police"]\n').reason
    error = error_of(STORM + "\n" + HEADER + 'when = "true"\n' + CORRELATION.replace('"cabinet-lights"', '"commune-storm"'))
    assert "duplicate id 'commune-storm'" in error.reason  # one namespace for rules, correlations and storms


# --- loading files --------------------------------------------------------------------------------

def test_load_rules_reads_directories_sorted_and_files(tmp_path):
    write(tmp_path, "b.toml", HEADER.replace("light-lamp", "b-rule").replace("lamp_failure", "b") + 'when = "true"\n')
    write(tmp_path, "a.toml", HEADER.replace("light-lamp", "a-rule").replace("lamp_failure", "a") + 'when = "true"\n')
    write(tmp_path, "notes.txt", "not a rule file")
    ruleset = load_rules([tmp_path, tmp_path / "a.toml"], CATALOG)  # a file named twice is read once
    assert [r.id for r in ruleset.rules] == ["a-rule", "b-rule"]
    assert ruleset.files == (str(tmp_path / "a.toml"), str(tmp_path / "b.toml"))
    assert ruleset.for_kind("street_light") == ruleset.rules and ruleset.for_kind("camera") == ()
    assert ruleset.by_id("b-rule") is ruleset.rules[1] and ruleset.by_id("nope") is None


def test_load_rules_refuses_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(RuleError, match="no such file or directory"):
        load_rules([tmp_path / "missing.toml"], CATALOG)
    (tmp_path / "latin1.toml").write_bytes(b"# ok\n# caf\xe9\n")
    with pytest.raises(RuleError) as info:
        load_rules([tmp_path / "latin1.toml"], CATALOG)
    assert info.value.line == 2 and info.value.reason == "not UTF-8 text"


def test_an_empty_rule_set():
    assert load_rules([], CATALOG) == RuleSet()


# --- the rules shipped with citypilot -------------------------------------------------------------

def test_the_default_rules_load():
    ruleset = load_default_rules(CATALOG)
    names = {Path(f).name for f in ruleset.files}
    assert names == {"lighting.toml", "traffic.toml", "access_information.toml", "parking_environment.toml",
                     "public_safety.toml", "connectivity.toml", "correlation.toml"}
    assert all(Path(f).parent == default_rules_dir() for f in ruleset.files)
    assert len({(r.kind, r.type) for r in ruleset.rules}) == len(ruleset.rules)
    assert all(r.severity in SEVERITIES for r in ruleset.rules)
    assert [c.id for c in ruleset.correlations] == ["cabinet-lights"]
    assert [(s.id, s.window_s, s.min_alarms) for s in ruleset.storms] == [("commune-storm", 120.0, 20)]


def test_every_reporting_kind_but_lights_and_vehicles_has_an_offline_rule():
    ruleset = load_default_rules(CATALOG)
    offline = {r.kind: r for r in ruleset.rules if r.on_connectivity == "offline"}
    expected = {k for k, spec in CATALOG.kinds.items() if spec.reporting_interval_s} - {"street_light", "bus", "service_vehicle"}
    assert set(offline) == expected
    for kind in ("lighting_cabinet", "traffic_controller", "camera", "building_alarm_panel"):
        assert offline[kind].severity == "major"


def test_default_rules_behave():
    ruleset = load_default_rules(CATALOG)
    lamp = ruleset.by_id("street-light-lamp-failure")
    assert lamp.when({"fault": "lamp_failure"}) and not lamp.when({"fault": "none"})
    assert lamp.clear_when({"fault": "none"}) and not lamp.clear_when({})
    overstay = ruleset.by_id("parking-delivery-bay-overstay")
    assert overstay.for_s == 1800 and overstay.notify == ("police",)
    assert overstay.when({"bay_type": "delivery", "occupied": True})
    assert not overstay.when({"bay_type": "standard", "occupied": True})
    battery = ruleset.by_id("parking-sensor-battery-low")
    assert battery.when({"battery_pct": 9}) and not battery.clear_when({"battery_pct": 12}) and battery.clear_when({"battery_pct": 16})
    no2 = ruleset.by_id("air-quality-no2-high")
    assert no2.when({"no2_ugm3": 201}) and no2.clear_when({"no2_ugm3": 179}) and no2.notify == ("environment",)
    fire = ruleset.by_id("building-fire-alarm")
    assert fire.severity == "critical" and fire.notify == ("buildings", "police")
    bollard = ruleset.by_id("bollard-site-fault")
    assert bollard.when({"fault": "none", "position": "fault"}) and bollard.when({"fault": "hydraulic"})
    detector = ruleset.by_id("traffic-controller-detector-fault")
    assert detector.on_event == ("detector_fault",) and detector.clear_when({"fault": "none"})
    assert ruleset.by_id("lighting-cabinet-door-open").for_s == 300


# --- citypilot rules check ------------------------------------------------------------------------

runner = CliRunner()


def test_cli_check_default_rules():
    result = runner.invoke(rules_app, ["check"])
    assert result.exit_code == 0, result.output
    ruleset = load_default_rules(CATALOG)
    assert result.stdout.strip() == (f"{len(ruleset.rules)} rules, 1 correlations, 1 storms in 7 files: OK")


def test_cli_check_reports_the_error_on_stderr(tmp_path):
    path = write(tmp_path, "bad.toml", HEADER + 'when = "fault == 3"\n')
    result = runner.invoke(rules_app, ["check", str(path)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {path}:8: [[rule]] light-lamp: when, column 10: fault is text")
    good = write(tmp_path, "good.toml", HEADER.replace("light-lamp", "x") + 'when = "true"\n')
    result = runner.invoke(rules_app, ["check", str(good)])
    assert result.exit_code == 0 and result.stdout.strip() == "1 rules, 0 correlations, 0 storms in 1 files: OK"
