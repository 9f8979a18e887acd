"""Shared test setup.

pytester's in-process runs (tests/test_plugin.py, tests/test_compare.py) put ``sys.modules`` back as it was when
they end. A module first imported inside one of them is imported again afterwards; pandas' parquet engine registers
pyarrow extension types at import, and a second registration fails ("A type extension with name pandas.period already
defined") in whatever test of that worker writes parquet next. Importing it here, before any test, makes it part of
the snapshot.
"""

from collections.abc import Callable
from typing import Any

import pandas.core.arrays.arrow.extension_types  # noqa: F401
import pytest


@pytest.fixture
def rack_entry(bench_rack: Any) -> Callable[[str], Any]:
    """The rack's entry for a board by name; the test skips when the rack has none (``--board`` filtered it out)."""

    def entry(board: str) -> Any:
        found = next((e for e in bench_rack.boards if e.board == board), None)
        if found is None:
            pytest.skip(f"no {board} in the rack")
        return found

    return entry
