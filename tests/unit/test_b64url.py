"""The one base64url codec of signed links, OAuth state, sealed tokens and listing cursors."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common import b64url


@given(st.binary(max_size=300))
def test_round_trip_without_padding(data: bytes) -> None:
    text = b64url.encode(data)
    assert "=" not in text and "+" not in text and "/" not in text
    assert b64url.decode(text) == data
    assert b64url.decode(base64.urlsafe_b64encode(data).decode()) == data  # padded too


@given(st.text(max_size=200))
def test_any_text_decodes_or_is_a_value_error(text: str) -> None:
    try:
        decoded = b64url.decode(text)
    except ValueError:
        return
    assert isinstance(decoded, bytes)
    assert b64url.decode(b64url.encode(decoded)) == decoded


@pytest.mark.parametrize("text", ["a+b/", "abc$", "====", "a", "ab c"])
def test_what_is_not_base64url_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        b64url.decode(text)
