"""Shared test setup: the repo root on sys.path, quiet progress bars, paths to shared data."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")

#: the parity fixtures (official PyTorch numbers); absent on a user's clone
FIXTURES = Path(os.environ.get("FSL_FIXTURES", ROOT.parent / "shared" / "fixtures"))
#: the real datasets shared with the project; absent on a user's clone
DATASETS = Path(os.environ.get("FSL_DATASETS", ROOT.parent / "shared" / "datasets"))


def need(path: Path) -> Path:
    """Skip the calling test when `path` does not exist (e.g. no ../shared on a user's clone)."""
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path
