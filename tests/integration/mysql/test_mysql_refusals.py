"""Logins the gateway refuses on the MySQL side, and what the client learns:
1045 access denied with no detail for bad tokens and identities without a policy;
nothing about the upstream account; a clear error when the target is down."""

from __future__ import annotations

import pymysql
import pytest

from ..conftest import free_port
from ..test_pg_refusals import CASES, _bad_tokens
from .conftest import MyGateway, StartMyGateway

pytestmark = pytest.mark.integration


def login_error(
    gw: MyGateway, token: str, user: str = "alice@example.com", **kw: object
) -> pymysql.err.MySQLError:
    with pytest.raises(pymysql.err.MySQLError) as info:
        pymysql.connect(**{**gw.pymysql_kwargs(token, user=user), **kw}).close()
    return info.value


@pytest.mark.parametrize("case", CASES)
def test_bad_tokens_get_access_denied_without_detail(mysql_gateway: MyGateway, case: str) -> None:
    token = _bad_tokens(mysql_gateway.process)[case]
    err = login_error(mysql_gateway, token, user="mallory@example.com")
    assert err.args[0] == 1045
    message = str(err.args[1])
    assert (
        message == "Access denied for user 'mallory@example.com'@'127.0.0.1' (using password: YES)"
    )


def test_identity_without_policy_is_denied(mysql_gateway: MyGateway) -> None:
    err = login_error(mysql_gateway, mysql_gateway.token("eve@example.com", groups=("nobody",)))
    assert err.args[0] == 1045
    assert "policy" not in str(err.args[1])


def test_unknown_database_and_upstream_details(mysql_gateway: MyGateway) -> None:
    err = login_error(mysql_gateway, mysql_gateway.token(), database="no_such_db")
    assert err.args[0] in (1044, 1049)
    assert "no_such_db" in str(err.args[1])
    assert "gateway" not in str(err.args[1])  # the upstream account is not named


def test_target_down(start_mysql_gateway: StartMyGateway) -> None:
    gw = start_mysql_gateway(upstream_port=free_port())
    err = login_error(gw, gw.token())
    assert err.args[0] == 2003
    assert 'could not connect to target "app-my"' in str(err.args[1])
    assert gw.alive()


def test_wrong_upstream_password(start_mysql_gateway: StartMyGateway) -> None:
    gw = start_mysql_gateway(password="wrong-password")
    err = login_error(gw, gw.token())
    assert err.args[0] == 2003
    message = str(err.args[1])
    assert "gateway" not in message and "Access denied" not in message
    assert "1045" in gw.log_text()  # the operator sees why
