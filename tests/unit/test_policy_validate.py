"""validate_policy: every error reported, each with its key path; spec_from_mapping."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.policy import PolicySpec, RuleSpec, spec_from_mapping, validate_policy

KEY = "policies[0]"


def errors(raw: dict[str, Any]) -> list[tuple[str, str]]:
    return validate_policy(raw, KEY)


def paths(raw: dict[str, Any]) -> list[str]:
    return [path for path, _ in errors(raw)]


@pytest.mark.parametrize(
    "raw",
    [
        {"allow": ["read"]},
        {"allow": []},
        {"allow": ["*"]},
        {"allow": ["*", "unknown"]},
        {"allow": ["read", "write"], "deny": ["delete_without_where", "truncate"]},
        {"allow": ["*"], "deny": ["drop_database", "copy_program", "file_access"]},
        {"allow": ["read", "ddl"], "review": ["ddl", "drop_table"]},
        {
            "allow": ["read", "write"],
            "deny": ["no-payroll"],
            "rules": [{"name": "no-payroll", "tables": ["hr.payroll", "hr.*", '"Odd.Name"']}],
        },
        {
            "allow": ["*"],
            "review": ["big-ddl"],
            "rules": [{"name": "big-ddl", "classes": ["ddl"], "kinds": ["DROP TABLE"]}],
        },
        {
            "allow": ["read"],
            "deny": ["fn"],
            "rules": [{"name": "fn", "functions": ["lower"], "schemas": ["hr"]}],
        },
        {"allow": ["read"], "name": "x", "groups": ["g"], "max_rows": 5},  # others: config.py
    ],
)
def test_valid(raw: dict[str, Any]) -> None:
    assert errors(raw) == []


def test_allow_is_required() -> None:
    assert errors({}) == [
        (
            "policies[0].allow",
            'required: list the statement classes this policy allows, e.g. ["read"] ("*" = '
            "every class except unknown)",
        )
    ]


def test_unknown_class_with_suggestion() -> None:
    assert errors({"allow": ["read", "write", "reed"]}) == [
        (
            "policies[0].allow[2]",
            'unknown statement class "reed" (did you mean "read"?); known: unknown, file, '
            "dynamic, privilege, admin, dcl, ddl, export, import, write, read, session, "
            'transaction, or "*"',
        )
    ]


def test_types() -> None:
    assert errors({"allow": "read"}) == [
        ("policies[0].allow", "expected a list of strings, got str")
    ]
    assert paths({"allow": ["read", 3, ""]}) == ["policies[0].allow[1]", "policies[0].allow[2]"]
    assert paths({"allow": ["read"], "rules": {"name": "x"}}) == ["policies[0].rules"]
    assert paths({"allow": ["read"], "rules": ["x"]}) == ["policies[0].rules[0]"]


def test_unknown_deny_rule() -> None:
    [(path, message)] = errors({"allow": ["*"], "deny": ["drop_databse"]})
    assert path == "policies[0].deny[0]"
    assert message.startswith('unknown rule "drop_databse" (did you mean "drop_database"?)')


def test_deny_of_a_class_explains_itself() -> None:
    [(path, message)] = errors({"allow": ["read"], "deny": ["ddl"]})
    assert path == "policies[0].deny[0]"
    assert "is a statement class; deny takes rule names" in message


def test_unknown_review_entry() -> None:
    [(path, message)] = errors({"allow": ["*"], "review": ["dll"]})
    assert path == "policies[0].review[0]"
    assert message.startswith('unknown class or rule "dll" (did you mean "ddl"?)')


def test_rules_that_can_never_fire() -> None:
    # classes all denied by this policy already
    assert errors({"allow": ["read"], "deny": ["drop_table"]}) == [
        (
            "policies[0].deny[0]",
            'rule "drop_table" can never fire in this policy: it only matches statements of '
            "class ddl, which this policy does not allow (they are denied by class already); "
            "remove it, or allow the class",
        )
    ]
    assert paths({"allow": ["read"], "review": ["write"]}) == ["policies[0].review[0]"]
    assert paths(
        {"allow": ["read"], "deny": ["w"], "rules": [{"name": "w", "classes": ["write"]}]}
    ) == ["policies[0].deny[0]"]
    assert paths(
        {"allow": ["read"], "deny": ["k"], "rules": [{"name": "k", "kinds": ["TRUNCATE"]}]}
    ) == ["policies[0].deny[0]"]
    # a rule nobody references
    [(path, message)] = errors({"allow": ["read"], "rules": [{"name": "orphan", "tables": ["t"]}]})
    assert path == "policies[0].rules[0].name"
    assert "not referenced from deny or review" in message
    # no matcher at all
    [(path, message)] = errors({"allow": ["read"], "deny": ["e"], "rules": [{"name": "e"}]})
    assert path == "policies[0].rules[0]"
    assert message.startswith("rule has no matcher")
    # a kind that never has the rule's classes
    [(path, message)] = errors(
        {
            "allow": ["*"],
            "deny": ["odd"],
            "rules": [{"name": "odd", "classes": ["read"], "kinds": ["DROP TABLE", "SELECT"]}],
        }
    )
    assert path == "policies[0].rules[0].kinds[0]"
    assert message.startswith('kind "DROP TABLE" never has class read')


def test_rule_errors_have_paths() -> None:
    raw = {
        "allow": ["*"],
        "deny": ["a", "a2", "drop_table"],
        "rules": [
            {
                "name": "a",
                "classes": ["reed"],
                "kinds": ["DROP TABEL"],
                "tables": ["a.b.c", ""],
                "functions": ["x.y"],
                "schemas": ["s*"],
                "colour": "red",
            },
            {"name": "a", "tables": ["t"]},
            {"name": "drop_table", "tables": ["t"]},
            {"name": "bad name!", "tables": ["t"]},
            {"name": "a2", "tables": ["t"]},
        ],
    }
    got = errors(raw)
    assert [p for p, _ in got] == [
        "policies[0].rules[0].colour",
        "policies[0].rules[0].tables[1]",
        "policies[0].rules[0].classes[0]",
        "policies[0].rules[0].kinds[0]",
        "policies[0].rules[0].tables[0]",
        "policies[0].rules[0].functions[0]",
        "policies[0].rules[0].schemas[0]",
        "policies[0].rules[1].name",
        "policies[0].rules[2].name",
        "policies[0].rules[3].name",
    ]
    messages = dict(got)
    assert messages["policies[0].rules[0].kinds[0]"].startswith(
        'unknown statement kind "DROP TABEL" (did you mean "DROP TABLE"?)'
    )
    assert messages["policies[0].rules[0].tables[0]"] == (
        'malformed table pattern "a.b.c"; use "table", "schema.table" or "schema.*"'
    )
    assert messages["policies[0].rules[1].name"] == 'duplicate rule name "a"'
    assert "built-in rule name" in messages["policies[0].rules[2].name"]


def test_spec_from_mapping() -> None:
    raw = {
        "allow": ["read", "write", "ddl"],
        "deny": ["r"],
        "review": ["ddl"],
        "rules": [{"name": "r", "tables": ["payroll"], "kinds": ["DELETE"]}],
    }
    assert validate_policy(raw, KEY) == []
    assert spec_from_mapping("contractors", raw) == PolicySpec(
        name="contractors",
        allow=("read", "write", "ddl"),
        deny=("r",),
        review=("ddl",),
        rules=(RuleSpec(name="r", kinds=("DELETE",), tables=("payroll",)),),
    )
