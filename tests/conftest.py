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


def run_script(script: str, *args: str, cwd=None, timeout: int = 600):
    """Run an entry script of the repo in a fresh interpreter; returns the CompletedProcess."""
    import subprocess
    env = dict(os.environ, TQDM_DISABLE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


#: a small 18-class dataset (8 base / 5 val / 5 novel) at 32x32: enough for 5-way episodes
TINY = dict(n_classes=18, images_per_class=12, image_size=32, splits=(8, 5, 5))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """The embedded demo dataset at tiny size, with its filelists written by the repo's writer."""
    from data.demo import build_demo_dataset
    folder = Path(build_demo_dataset(str(tmp_path_factory.mktemp("tiny") / "glyphs"), seed=0, **TINY))
    result = run_script("write_miniImagenet_filelist.py", "--data_path", folder)
    assert result.returncode == 0, result.stderr
    return folder


def tiny_flags(data: Path, checkpoints: Path, *extra: str) -> list:
    """Flags shared by the e2e tests: Conv-4 on the tiny dataset, CPU, no workers."""
    return ["--dataset", "demo", "--data_path", str(data), "--model", "Conv4", "--image_size", "32",
            "--num_workers", "0", "--n_query", "5", "--checkpoint_dir", str(checkpoints), *extra]


def tiny_mtl_flags(data: Path, checkpoints: Path, *extra: str) -> list:
    """The e2e flags with MTL on a narrow ResNet-25 (widths 4-8-16) instead of Conv-4."""
    flags = tiny_flags(data, checkpoints, "--method", "mtl", "--widths", "4,8,16", *extra)
    flags[flags.index("--model") + 1] = "ResNet25"
    return flags
