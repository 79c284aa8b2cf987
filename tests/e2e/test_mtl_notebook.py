"""notebooks/mtl.ipynb's quick preset as committed (data and work folders in tmp_path): the three
phases, 1- and 5-shot tests above chance, the inner loop traced step by step, the SS scales."""
import re

from tests.e2e.notebooks import above_chance, run_quick

LINE = re.compile(r"^5-way ([15])-shot: \d+ Test Acc = ([\d.]+)% \+- ([\d.]+)%$", re.M)
INNER = re.compile(r"^5-way ([15])-shot: accuracy before the inner loop ([\d.]+)% \+- [\d.]+%, after (\d+) steps "
                   r"([\d.]+)% \+- [\d.]+%$", re.M)


def test_quick_preset(tmp_path, monkeypatch):
    run = run_quick("mtl", tmp_path, monkeypatch)
    results = {shot: (float(mean), float(interval)) for shot, mean, interval in LINE.findall(run.text)}
    assert set(results) == {"1", "5"}, run.text[-3000:]
    assert above_chance(*results["5"], 20.0), results
    inner = INNER.findall(run.text)
    assert [shot for shot, *_ in inner] == ["1", "5"], run.text[-2000:]
    assert all(steps == "100" for *_, steps, _ in inner), inner
    run.figures(["episode", "pretrain_history", "meta_history", "inner_loop", "ss_scales"])
    assert (run.work / "checkpoints" / "demo" / "ResNet25_mtl_5way_1shot_metatrain" / "best_model.pdparams").is_file()
