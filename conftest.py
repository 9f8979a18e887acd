"""Repository-wide test configuration: where the optional third-party models live."""

from pathlib import Path

import pytest

SHARED_MODELS = Path(__file__).resolve().parent.parent / "shared" / "models"


@pytest.fixture(scope="session")
def shared_models() -> Path:
    """../shared/models, or a clean skip when this clone has none beside it."""
    if not SHARED_MODELS.is_dir():
        pytest.skip(f"{SHARED_MODELS} is absent (third-party models are only beside the project's own clone)")
    return SHARED_MODELS
