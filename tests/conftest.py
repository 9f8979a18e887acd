"""Shared test setup.

pytester's in-process runs (tests/test_plugin.py, tests/test_compare.py) put ``sys.modules`` back as it was when
they end. A module first imported inside one of them is imported again afterwards; pandas' parquet engine registers
pyarrow extension types at import, and a second registration fails ("A type extension with name pandas.period already
defined") in whatever test of that worker writes parquet next. Importing it here, before any test, makes it part of
the snapshot.
"""

import pandas.core.arrays.arrow.extension_types  # noqa: F401
