"""notebooks/predict.ipynb's quick preset as committed (data and work folders in tmp_path): quick
training, example images into WORK/my_support and WORK/my_photos, predict with the grid figure,
reuse of the saved support set, export and Paddle Inference."""
import re

from tests.e2e.notebooks import run_quick


def test_quick_preset(tmp_path, monkeypatch):
    run = run_quick("predict", tmp_path, monkeypatch)
    assert len(run.accuracies()) == 1 and run.accuracies()[0] > 30.0, run.text[-3000:]  # 5-way: chance 20%
    assert re.search(r"^20 images -> .*predictions.csv: 5 classes \(25 support images\)", run.text, re.M), \
        run.text[-3000:]
    assert "same predictions from the saved support set: True" in run.text
    assert re.search(r"predict.py and infer.py agree on 20/20 images", run.text), run.text[-2000:]
    run.figures(["predictions"])
    out = run.work / "predictions"
    assert (out / "my.pdsupport").is_file() and (out / "exported" / "classes.json").is_file()
