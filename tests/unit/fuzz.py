"""Hypothesis strategies shared by the fuzz tests of everything that reads outside input."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# No example database: the tests must not write into the working tree.
FUZZ = settings(
    database=None,
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=30,
)

# Bytes that are likely to get past the first checks: JSON text, nested bombs, and noise.
nested = st.integers(min_value=1, max_value=3000).map(lambda n: b"[" * n + b"]" * n)
nested_objects = st.integers(min_value=1, max_value=3000).map(
    lambda n: b'{"a":' * n + b"1" + b"}" * n
)
numbers = st.sampled_from(
    [b"1E+999999999", b"-1e-999999999", b"9" * 5000, b"NaN", b"Infinity", b"-0", b"1.5e308"]
)
raw_bytes = st.one_of(
    st.binary(max_size=300),
    nested,
    nested_objects,
    numbers,
    st.text(max_size=200).map(str.encode),
)

amounts = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=None),
    st.decimals(min_value=Decimal("-1e12"), max_value=Decimal("1e12"), places=7),
    st.decimals(min_value=Decimal("-1e12"), max_value=Decimal("1e12"), places=3),
    st.integers(min_value=-(10**25), max_value=10**25),
)


def with_type(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    """Command-shaped objects of `kind` with arbitrary field values."""
    return st.fixed_dictionaries(
        {"type": st.just(kind)},
        optional={
            "command_id": st.one_of(st.uuids().map(str), json_values),
            "realm_id": st.one_of(st.from_regex(r"[0-9]{1,32}", fullmatch=True), json_values),
            "issued_at": st.one_of(st.just("2026-01-01T00:00:00Z"), json_values),
            "issued_by": st.one_of(st.just("api"), json_values),
            "local_customer_id": st.one_of(st.just("c-1"), json_values),
            "display_name": json_values,
            "qbo_customer_id": json_values,
            "changes": st.lists(
                st.dictionaries(
                    st.sampled_from(["entity", "id", "operation", "last_updated", "deleted_id"]),
                    json_values,
                ),
                max_size=3,
            ),
            "extra": json_values,
        },
    )
