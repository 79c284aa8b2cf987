"""notebooks/predict.ipynb top to bottom on the embedded demo data at tiny size, within a time
budget: quick training, example images into work/my_support and work/my_photos, predict with the
grid figure, reuse of the saved support set, export and infer."""
import re
from pathlib import Path

from tests.e2e.notebooks import check_clean_and_parametrised, demo_parameters, run_on_demo

NOTEBOOK = "predict.ipynb"
#: the whole notebook at tiny size: measured 35 s on a 2-core CPU shared with other jobs (most of
#: it the seven entry scripts' interpreter start-ups); four times that flags a slowdown, not noise
BUDGET_SECONDS = 150


def tiny_parameters(tmp_path: Path) -> dict:
    work = tmp_path / "work"
    return demo_parameters(tmp_path, SUPPORT_DIR=str(work / "my_support"), PHOTOS_DIR=str(work / "my_photos"),
                           PRESET="quick", MODEL_PATH="", PRETRAIN_EPOCHS=1, META_EPOCHS=1, TRAIN_EPISODES=4,
                           TRAIN_WAY=5, N_QUERY=5, VAL_EPISODES=5, TEST_EPISODES=10, EXAMPLE_CLASSES=5, SHOTS=3,
                           PHOTOS_PER_CLASS=3, SEED=0)


def test_committed_notebook_is_clean_and_parametrised():
    check_clean_and_parametrised(NOTEBOOK, tiny_parameters(Path("/x")))


def test_notebook_runs_on_tiny_demo_data(tmp_path, monkeypatch):
    params = tiny_parameters(tmp_path)
    run = run_on_demo(NOTEBOOK, params, monkeypatch)
    assert re.search(r"^10 Test Acc = ", run.text, re.M), run.text[-3000:]
    assert re.search(r"^15 images -> .*predictions.csv: 5 classes \(15 support images\)", run.text, re.M), \
        run.text[-3000:]
    assert "same predictions from the saved support set: True" in run.text
    assert re.search(r"predict.py and infer.py agree on 15/15 images", run.text), run.text[-2000:]
    run.figures(params, ["predictions"])
    assert run.images >= 1
    out = Path(params["WORK"]) / "predictions"
    assert (out / "my.pdsupport").is_file() and (out / "exported" / "classes.json").is_file()
    assert run.seconds < BUDGET_SECONDS, f"notebook took {run.seconds:.0f}s"
