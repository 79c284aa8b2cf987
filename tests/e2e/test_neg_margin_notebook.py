"""notebooks/neg_margin.ipynb's quick preset as committed (data and work folders in tmp_path):
one base training per margin, 1- and 5-shot meta-tests above chance, accuracy against margin."""
import re

from tests.e2e.notebooks import run_quick


def test_quick_preset(tmp_path, monkeypatch):
    run = run_quick("neg_margin", tmp_path, monkeypatch)
    accuracies = run.accuracies()
    assert len(accuracies) == 4, run.text[-3000:]  # 2 margins x 2 shots
    assert min(accuracies) > 25.0, accuracies      # chance is 20%
    assert re.search(r"^5-way 1-shot: best margin -?[\d.]+ with [\d.]+%", run.text, re.M), run.text[-2000:]
    run.figures(["episode", "margin_curves", "accuracy_vs_margin"])
    runs = run.work / "checkpoints" / "demo"
    assert {p.name for p in runs.iterdir()} == {"Conv4_neg_margin_mmfs_cosineface_m-0.1_pretrain",
                                                "Conv4_neg_margin_mmfs_cosineface_m0_pretrain"}
