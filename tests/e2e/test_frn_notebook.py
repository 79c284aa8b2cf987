"""notebooks/frn_mini_imagenet.ipynb's quick preset as committed (data and work folders in
tmp_path): pre-training, meta-training, 1- and 5-shot tests clearly above chance, the figures."""
import re

from tests.e2e.notebooks import above_chance, run_quick

LINE = re.compile(r"^5-way ([15])-shot: \d+ Test Acc = ([\d.]+)% \+- ([\d.]+)%$", re.M)


def test_quick_preset(tmp_path, monkeypatch):
    run = run_quick("frn_mini_imagenet", tmp_path, monkeypatch)
    results = {shot: (float(mean), float(interval)) for shot, mean, interval in LINE.findall(run.text)}
    assert set(results) == {"1", "5"}, run.text[-3000:]
    assert all(above_chance(mean, interval, 20.0) for mean, interval in results.values()), results
    run.figures(["episode", "pretrain_history", "meta_history", "reconstruction"])
    folder = run.work / "checkpoints" / "demo" / "Conv4_meta_frn_20way_1shot_metatrain"
    assert (folder / "best_model.pdparams").is_file() and (folder / "results.json").is_file()
