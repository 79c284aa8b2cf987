"""notebooks/deepemd.ipynb's quick preset as committed (data and work folders in tmp_path), and
once more with each other VARIANT: every variant meta-trains from the FCN pre-training and tests;
the weights and flows of one episode are drawn."""
import re

import pytest

from tests.e2e.notebooks import above_chance, run_quick

LINE = re.compile(r"^5-way ([15])-shot \((\w+)\): \d+ Test Acc = ([\d.]+)% \+- ([\d.]+)%$", re.M)
FIGURES = ["episode", "pretrain_history", "meta_history", "emd_weights", "emd_flow_true", "emd_flow_rival"]


def test_quick_preset(tmp_path, monkeypatch):
    run = run_quick("deepemd", tmp_path, monkeypatch)
    results = {shot: (variant, float(mean), float(interval))
               for shot, variant, mean, interval in LINE.findall(run.text)}
    assert set(results) == {"1", "5"} and {v for v, *_ in results.values()} == {"fcn"}, run.text[-3000:]
    assert above_chance(*results["1"][1:], 20.0), results
    run.figures(FIGURES)


@pytest.mark.parametrize("variant", ["grid", "sampling"])
def test_quick_preset_with_variant(variant, tmp_path, monkeypatch):
    run = run_quick("deepemd", tmp_path, monkeypatch, VARIANT=variant)
    assert {(shot, v) for shot, v, *_ in LINE.findall(run.text)} == {("1", variant), ("5", variant)}, run.text[-3000:]
    runs = run.work / "checkpoints" / "demo"
    assert (runs / "Conv4_deepemd_fcn_pretrain" / "best_model.pdparams").is_file()
    assert (runs / f"Conv4_deepemd_{variant}_5way_1shot_metatrain" / "best_model.pdparams").is_file()
    run.figures(FIGURES)
