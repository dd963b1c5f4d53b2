"""The byte budget's estimate of a record: the quick pass over a record's top level
gives the same answer as measuring the whole record."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowrunner.budget import COPIES, ESCAPED, FINISHING_BYTES, LARGE, SMALL_CHARS, record_cost
from flowrunner.templating import limits


def measured(mappings: tuple[dict[str, Any], ...]) -> int:
    cost = limits.measure(mappings, FINISHING_BYTES) * ESCAPED * COPIES
    return cost if cost >= LARGE else 0


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), JSON), st.dictionaries(st.text(), JSON))
def test_the_quick_estimate_agrees_with_measuring(keys, call):
    assert record_cost((keys, call)) == measured((keys, call))


@pytest.mark.parametrize(
    "keys",
    [
        {"response_raw": "x" * SMALL_CHARS},
        {"response_raw": "x" * (SMALL_CHARS - 40)},
        {"nested": {"deep": ["y" * SMALL_CHARS]}},
        {"big": 10 ** (3 * SMALL_CHARS)},
        {f"k{i}": i for i in range(SMALL_CHARS // 4)},
    ],
    ids=["long-text", "just-under", "nested", "huge-integer", "many-keys"],
)
def test_records_near_the_threshold(keys):
    assert record_cost((keys, {"cli": "+15551234567"})) == measured((keys, {"cli": "+15551234567"}))
