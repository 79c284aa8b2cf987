"""notebooks/frn_mini_imagenet.ipynb top to bottom on the embedded demo data at tiny size
(< 2 minutes on a CPU): pre-training, 5-shot meta-training, 1- and 5-shot tests, pictures."""
import re
from pathlib import Path

from tests.e2e.notebooks import ACC_LINE, check_clean_and_parametrised, demo_parameters, run_on_demo

NOTEBOOK = "frn_mini_imagenet.ipynb"


def tiny_parameters(tmp_path: Path) -> dict:
    """Conv-4 at 32x32, two epochs of each stage, a few episodes."""
    return demo_parameters(tmp_path, ZIP=str(tmp_path / "data" / "unused.zip"), IMAGE_SIZE=32, MODEL="Conv4",
                           SEED=0, PRETRAIN_EPOCHS=2, PRETRAIN_LR=0.05, PRETRAIN_MILESTONES=[1], PRETRAIN_BATCH=16,
                           META_EPOCHS=2, META_LR=1e-3, META_MILESTONES=[1], TRAIN_EPISODES=4, TRAIN_WAY=5,
                           META_SHOT=5, N_QUERY=5, VAL_EPISODES=10, TEST_EPISODES=20, TEST_TASKS=1)


def test_committed_notebook_is_clean_and_parametrised():
    check_clean_and_parametrised(NOTEBOOK, tiny_parameters(Path("/x")))


def test_notebook_runs_on_tiny_demo_data(tmp_path, monkeypatch):
    params = tiny_parameters(tmp_path)
    run = run_on_demo(NOTEBOOK, params, monkeypatch)
    assert len(ACC_LINE.findall(run.text)) == 2, run.text[-3000:]  # 1-shot and 5-shot
    assert re.search(r"^5-way 1-shot: \d+ Test Acc", run.text, re.M) and re.search(r"^5-way 5-shot: ", run.text, re.M)
    assert run.images >= 5, f"{run.images} figures"  # episode, 2 histories, curves.png, reconstruction
    run.figures(params, ["episode", "pretrain_history", "meta_history", "reconstruction"])
    folder = Path(params["WORK"]) / "checkpoints" / "demo" / "Conv4_meta_frn_5way_5shot_metatrain"
    assert (folder / "best_model.pdparams").is_file() and (folder / "history.json").is_file()
    assert run.seconds < 120, f"notebook took {run.seconds:.0f}s"
