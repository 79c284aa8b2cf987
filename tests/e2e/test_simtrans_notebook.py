"""notebooks/simtrans.ipynb top to bottom on the embedded demo data at tiny size, with the
parameters cell overridden as in tests/e2e/test_notebook.py (papermill's convention)."""
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
from tests.e2e.test_notebook import check_clean_and_parametrised, execute, outputs  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "simtrans.ipynb"


def tiny_parameters(tmp_path: Path) -> dict:
    """Every step for one or two epochs of Conv-4 on 18 glyph classes x 12 images at 32 px."""
    return dict(DATA_ROOT=str(tmp_path / "data"), WORK=str(tmp_path / "work"), USE_DEMO_DATA=True,
                DEMO_CLASSES=18, DEMO_IMAGES=12, DEMO_SPLITS=(8, 5, 5), OUTLIER_FRACTION=0.25, TEST_PER_CLASS=4,
                BASE_TEST_PER_CLASS=2, MODEL="Conv4", IMAGE_SIZE=32, IMAGENET_PRETRAINED=0, GPU=False, NUM_WORKERS=0,
                SEED=0, NAIVE_EPOCHS=2, NAIVE_LR=0.02, NAIVE_BATCH=8, SIMNET_EPOCHS=1, SIMNET_LR=0.01, SIMNET_BATCH=8,
                SIMNET_LR_INTERVAL=25, BETA=0.1, BATCH_CLASS_NUM=4, BATCH_CLASS_NUM_B=2, F1_BATCHES=2,
                MAIN_EPOCHS=2, MAIN_LR=0.02, MAIN_BATCH=8, GRAPH_EPOCHS=2, GRAPH_LR=0.01, CLS_BATCH=8, GCN_BATCH=16,
                ALPHA=0.1, LR_INTERVAL=20)


def test_committed_notebook_is_clean_and_parametrised():
    check_clean_and_parametrised(NOTEBOOK, tiny_parameters(Path("/x")))
    assert "/home/aistudio" in nbformat.read(NOTEBOOK, as_version=4).cells[2].source


def test_notebook_runs_on_tiny_demo_data(tmp_path, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")  # inherited by the kernel and the scripts it runs
    monkeypatch.setenv("FSL_REPO", str(ROOT))
    params = tiny_parameters(tmp_path)
    nb, elapsed = execute(NOTEBOOK, params)
    assert not outputs(nb, "error")
    text = "".join(out.get("text", "") for out in outputs(nb, "stream"))
    assert re.search(r"ROC-AUC of the savg1 weights .*: [\d.]+$", text, re.M), text[-3000:]
    for title in ("naive", "sample weights", "sample weights + graph"):
        assert re.search(rf"^{re.escape(title)}: \d+ Test Acc = [\d.]+% \+- [\d.]+%$", text, re.M), title
    figures = Path(params["WORK"]) / "figures"
    for name in ("simnet_history", "sample_weights", "similarity_matrix", "Conv4_simtrans_naive",
                 "Conv4_simtrans_main_savg1", "Conv4_simtrans_alternate_GCN_a0.1_avg1"):
        assert (figures / f"{name}.png").stat().st_size > 1000, name
    images = [out for out in outputs(nb, "display_data") if "image/png" in out.get("data", {})]
    assert len(images) >= 6
    assert elapsed < 150, f"notebook took {elapsed:.0f}s"
