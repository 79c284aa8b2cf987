"""notebooks/neg_margin.ipynb top to bottom on the embedded demo data at tiny size (< 2 minutes
on a CPU): two margins, two shots, and the accuracy-against-margin plot."""
import re
from pathlib import Path

from tests.e2e.notebooks import ACC_LINE, check_clean_and_parametrised, demo_parameters, run_on_demo

NOTEBOOK = "neg_margin.ipynb"


def tiny_parameters(tmp_path: Path) -> dict:
    return demo_parameters(tmp_path, ZIP=str(tmp_path / "data" / "unused.zip"), IMAGE_SIZE=32, MODEL="Conv4",
                           SEED=0, PROTOCOL="mmfs", MARGINS=[-0.1, 0.0], EPOCHS=2, LR=0.05, MILESTONES=[1],
                           WARMUP_ITERS=3, BATCH=16, NUM_CLASSES=10, VAL_EPISODES=10, VAL_FREQ=1, SHOTS=[1, 5],
                           N_QUERY=5, TEST_EPISODES=20, FINETUNE_STEPS=20)


def test_committed_notebook_is_clean_and_parametrised():
    check_clean_and_parametrised(NOTEBOOK, tiny_parameters(Path("/x")))


def test_notebook_runs_on_tiny_demo_data(tmp_path, monkeypatch):
    params = tiny_parameters(tmp_path)
    run = run_on_demo(NOTEBOOK, params, monkeypatch)
    assert len(ACC_LINE.findall(run.text)) == 4, run.text[-3000:]  # 2 margins x 2 shots
    assert re.search(r"^5-way 1-shot: best margin -?[\d.]+ with [\d.]+%", run.text, re.M), run.text[-2000:]
    run.figures(params, ["episode", "margin_curves", "accuracy_vs_margin"])
    runs = Path(params["WORK"]) / "checkpoints" / "demo"
    assert {p.name for p in runs.iterdir()} == {"Conv4_neg_margin_mmfs_cosineface_m-0.1_pretrain",
                                                "Conv4_neg_margin_mmfs_cosineface_m0_pretrain"}
    assert run.seconds < 120, f"notebook took {run.seconds:.0f}s"
