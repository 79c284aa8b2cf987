"""notebooks/deepemd.ipynb top to bottom on the embedded demo data at tiny size (Conv-4, 48x48:
3x3 nodes per image), like tests/e2e/test_notebook.py does for the FRN notebook."""
import re
from pathlib import Path

import pytest

from tests.e2e.test_notebook import ACC_LINE, check_clean_and_parametrised, execute, outputs

pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "deepemd.ipynb"


def tiny_parameters(tmp_path: Path) -> dict:
    data, work = tmp_path / "data", tmp_path / "work"
    return dict(DATA_ROOT=str(data), WORK=str(work), ZIP=str(data / "unused.zip"), USE_DEMO_DATA=True,
                DEMO_CLASSES=18, DEMO_IMAGES=12, DEMO_SPLITS=(8, 5, 5), IMAGE_SIZE=48, MODEL="Conv4", GPU=False,
                NUM_WORKERS=0, SEED=1, PRETRAIN_EPOCHS=1, PRETRAIN_BATCH=16, PRETRAIN_VAL_EPISODES=5,
                META_EPOCHS=1, TRAIN_EPISODES=2, VAL_EPISODES=5, N_QUERY=5, TEST_EPISODES={1: 6, 5: 3}, SFC_STEPS=2)


def test_committed_notebook_is_clean_and_parametrised():
    check_clean_and_parametrised(NOTEBOOK, tiny_parameters(Path("/x")))


def test_notebook_runs_on_tiny_demo_data(tmp_path, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("FSL_REPO", str(ROOT))
    params = tiny_parameters(tmp_path)
    nb, seconds = execute(NOTEBOOK, params)
    assert not outputs(nb, "error")
    text = "".join(out.get("text", "") for out in outputs(nb, "stream"))
    assert len(ACC_LINE.findall(text)) == 2, text[-3000:]
    assert re.search(r"^5-way 1-shot: 6 Test Acc", text, re.M) and re.search(r"^5-way 5-shot: 3 Test Acc", text, re.M)
    figures = Path(params["WORK"]) / "figures"
    for name in ("episode", "pretrain_history", "meta_history", "emd_weights", "emd_flow_true", "emd_flow_rival"):
        assert (figures / f"{name}.png").stat().st_size > 1000, name
    assert seconds < 150, f"notebook took {seconds:.0f}s"
