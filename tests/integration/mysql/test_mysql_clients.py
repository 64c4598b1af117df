"""Real MySQL clients through the gateway, compared with the same calls direct.

The gateway runs as a subprocess in front of the harness's MariaDB (TLS on,
verify-full upstream, mysql_native_password account); clients log in with a JWT
over TLS through caching_sha2_password's full-authentication path.
"""

from __future__ import annotations

from typing import Any

import pymysql
import pytest

from .conftest import MyGateway

pytestmark = pytest.mark.integration

QUERIES = [
    "SELECT id, name, email, ssn, card_number, phone FROM customers ORDER BY id LIMIT 50",
    "SELECT count(*), sum(amount), min(created_at) FROM orders",
    "SELECT kind, count(*) FROM events GROUP BY kind ORDER BY kind",
    "SELECT 1, 2.5, 'x', NULL, CAST('2024-01-02' AS DATE), CAST('12:34:56' AS TIME), "
    "x'deadbeef', JSON_OBJECT('a', 1)",
]


def _pymysql_results(kwargs: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    with pymysql.connect(**kwargs) as conn, conn.cursor() as cur:
        for q in QUERIES:
            cur.execute(q)
            out.append((cur.description, cur.fetchall()))
    return out


def test_pymysql_matches_direct(mysql_gateway: MyGateway, direct_kwargs: dict[str, Any]) -> None:
    through = _pymysql_results(mysql_gateway.pymysql_kwargs())
    direct = _pymysql_results(direct_kwargs)
    assert through == direct
    assert len(through[0][1]) == 50
