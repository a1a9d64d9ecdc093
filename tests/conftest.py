from __future__ import annotations

import os
from pathlib import Path

import pytest

# Offline and single-threaded unless the caller says otherwise: the hub is unreachable and
# the CI machine has 2 cores shared with any server a test starts.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real benchmark/prompt files (../shared/data beside the checkout, or $SELFALIGN_DATA_DIR)."""
    path = Path(os.environ.get("SELFALIGN_DATA_DIR", SHARED_DATA))
    if not path.is_dir():
        pytest.fail(f"test data not found at {path}; put shared/ beside the checkout or set SELFALIGN_DATA_DIR")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from tests.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Converted real models are expensive to rebuild: share the user's model cache, but keep
    # downloads and everything else that tests write out of it.
    if "SELFALIGN_CACHE" not in os.environ:
        monkeypatch.setenv("SELFALIGN_CACHE", str(Path.home() / ".cache" / "selfalign"))
