"""notebooks/deepemd.ipynb top to bottom on the embedded demo data at tiny size (Conv-4, 48x48:
3x3 nodes per image): training, 1- and 5-shot tests, the weights and flows of one episode."""
import re
from pathlib import Path

from tests.e2e.notebooks import ACC_LINE, check_clean_and_parametrised, demo_parameters, run_on_demo

NOTEBOOK = "deepemd.ipynb"


def tiny_parameters(tmp_path: Path) -> dict:
    return demo_parameters(tmp_path, ZIP=str(tmp_path / "data" / "unused.zip"), IMAGE_SIZE=48, MODEL="Conv4",
                           SEED=1, PRETRAIN_EPOCHS=1, PRETRAIN_BATCH=16, PRETRAIN_VAL_EPISODES=5, META_EPOCHS=1,
                           TRAIN_EPISODES=2, VAL_EPISODES=5, N_QUERY=5, TEST_EPISODES={1: 6, 5: 3}, SFC_STEPS=2)


def test_committed_notebook_is_clean_and_parametrised():
    check_clean_and_parametrised(NOTEBOOK, tiny_parameters(Path("/x")))


def test_notebook_runs_on_tiny_demo_data(tmp_path, monkeypatch):
    params = tiny_parameters(tmp_path)
    run = run_on_demo(NOTEBOOK, params, monkeypatch)
    assert len(ACC_LINE.findall(run.text)) == 2, run.text[-3000:]
    assert re.search(r"^5-way 1-shot: 6 Test Acc", run.text, re.M) and re.search(r"^5-way 5-shot: 3 Test Acc",
                                                                                  run.text, re.M)
    run.figures(params, ["episode", "pretrain_history", "meta_history", "emd_weights", "emd_flow_true",
                         "emd_flow_rival"])
    assert run.seconds < 150, f"notebook took {run.seconds:.0f}s"
