from __future__ import annotations

import pytest
from pydantic import SecretStr

from services.api.auth import (
    DEV_TOKEN,
    ApiTokens,
    InsecureConfiguration,
    bearer_token,
    load_api_tokens,
    parse_tokens,
)
from services.common.settings import Settings


def test_tokens_are_comma_separated_and_trimmed() -> None:
    assert parse_tokens(" alpha, beta ,,gamma ") == ["alpha", "beta", "gamma"]
    assert parse_tokens("") == []


def test_every_configured_token_is_accepted_and_nothing_else() -> None:
    tokens = ApiTokens.of(["alpha-token", "beta-token"])
    assert tokens.accepts("alpha-token")
    assert tokens.accepts("beta-token")
    assert not tokens.accepts("alpha-token ")
    assert not tokens.accepts("alpha")
    assert not tokens.accepts("")
    assert not tokens.accepts(None)


def test_tokens_do_not_show_in_repr() -> None:
    assert "alpha-token" not in repr(ApiTokens.of(["alpha-token"]))


def test_an_empty_token_list_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ApiTokens.of([])


def test_local_development_without_tokens_accepts_only_the_dev_token() -> None:
    tokens = load_api_tokens(Settings(api_tokens=SecretStr(""), environment="local"))
    assert tokens.accepts(DEV_TOKEN)
    assert not tokens.accepts("anything-else")


def test_configured_tokens_replace_the_dev_token() -> None:
    tokens = load_api_tokens(
        Settings(api_tokens=SecretStr("s3cret-1,s3cret-2"), environment="local")
    )
    assert tokens.accepts("s3cret-2")
    assert not tokens.accepts(DEV_TOKEN)


def test_no_tokens_outside_local_refuses_to_start() -> None:
    with pytest.raises(InsecureConfiguration, match="API_TOKENS"):
        load_api_tokens(Settings(api_tokens=SecretStr(""), environment="production"))


def test_the_dev_token_is_refused_outside_local() -> None:
    with pytest.raises(InsecureConfiguration, match="dev-token"):
        load_api_tokens(Settings(api_tokens=SecretStr("real,dev-token"), environment="staging"))


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc.def", "abc.def"),
        ("bearer abc", "abc"),
        ("  Bearer   abc  ", "abc"),
        ("Basic YWxhZGRpbjpvcGVu", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token_is_read_from_the_authorization_header(
    header: str | None, token: str | None
) -> None:
    assert bearer_token(header) == token
