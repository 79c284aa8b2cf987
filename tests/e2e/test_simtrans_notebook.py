"""notebooks/simtrans.ipynb top to bottom on the embedded demo data at tiny size: the five steps,
the sample weights of one novel class and the similarity matrix."""
import re
from pathlib import Path

from tests.e2e.notebooks import check_clean_and_parametrised, demo_parameters, run_on_demo

NOTEBOOK = "simtrans.ipynb"


def tiny_parameters(tmp_path: Path) -> dict:
    """Every step for one or two epochs of Conv-4 on 18 glyph classes x 12 images at 32 px."""
    return demo_parameters(tmp_path, OUTLIER_FRACTION=0.25, TEST_PER_CLASS=4, BASE_TEST_PER_CLASS=2, MODEL="Conv4",
                           IMAGE_SIZE=32, IMAGENET_PRETRAINED=0, SEED=0, NAIVE_EPOCHS=2, NAIVE_LR=0.02,
                           NAIVE_BATCH=8, SIMNET_EPOCHS=1, SIMNET_LR=0.01, SIMNET_BATCH=8, SIMNET_LR_INTERVAL=25,
                           BETA=0.1, BATCH_CLASS_NUM=4, BATCH_CLASS_NUM_B=2, F1_BATCHES=2, MAIN_EPOCHS=2,
                           MAIN_LR=0.02, MAIN_BATCH=8, GRAPH_EPOCHS=2, GRAPH_LR=0.01, CLS_BATCH=8, GCN_BATCH=16,
                           ALPHA=0.1, LR_INTERVAL=20)


def test_committed_notebook_is_clean_and_parametrised():
    check_clean_and_parametrised(NOTEBOOK, tiny_parameters(Path("/x")))


def test_notebook_runs_on_tiny_demo_data(tmp_path, monkeypatch):
    params = tiny_parameters(tmp_path)
    run = run_on_demo(NOTEBOOK, params, monkeypatch)
    assert re.search(r"ROC-AUC of the savg1 weights .*: [\d.]+$", run.text, re.M), run.text[-3000:]
    for title in ("naive", "sample weights", "sample weights + graph"):
        assert re.search(rf"^{re.escape(title)}: \d+ Test Acc = [\d.]+% \+- [\d.]+%$", run.text, re.M), title
    run.figures(params, ["simnet_history", "sample_weights", "similarity_matrix", "Conv4_simtrans_naive",
                         "Conv4_simtrans_main_savg1", "Conv4_simtrans_alternate_GCN_a0.1_avg1"])
    assert run.images >= 6
    assert run.seconds < 150, f"notebook took {run.seconds:.0f}s"
