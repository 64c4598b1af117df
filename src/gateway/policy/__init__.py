"""SQL-aware statement policy: classify statements (sqlglot, fail closed) and decide.

Synchronous and free of I/O. The session drivers use:

* ``PolicyEngine.build(specs, dialect)`` once per distinct set of policies and target
  dialect ("postgres" | "mysql"); ``engine.digest`` goes into recordings;
* ``engine.session()`` per connection, then ``check_query(sql)`` for every simple Query /
  Parse / COM_QUERY / COM_STMT_PREPARE text, ``check_function_call()`` for PostgreSQL
  fast-path calls and ``reset()`` on DISCARD ALL / connection reset;
* ``validate_policy(raw, key)`` from config validation, ``spec_from_mapping`` to build specs.

See docs/policy.md for the model, the classes, the built-in rules and custom rule syntax.
"""

from __future__ import annotations

from gateway.policy.decide import CLASSIFIER_VERSION, Decision, refused_beyond
from gateway.policy.engine import PolicyEngine, SessionPolicy
from gateway.policy.spec import PolicySpec, RuleSpec, spec_from_mapping, validate_policy
from gateway.policy.vocabulary import BUILTIN_RULES, CLASS_DESCRIPTIONS, CLASSES, KINDS

__all__ = [
    "BUILTIN_RULES",
    "CLASSES",
    "CLASSIFIER_VERSION",
    "CLASS_DESCRIPTIONS",
    "KINDS",
    "Decision",
    "PolicyEngine",
    "PolicySpec",
    "RuleSpec",
    "SessionPolicy",
    "refused_beyond",
    "spec_from_mapping",
    "validate_policy",
]
