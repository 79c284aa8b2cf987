"""test.py's result file (frn/results.py): one record per task appended next to the checkpoint (or
to --result_file), every field a results table needs; appends never lose a record, and a file that
is not a result list is refused in one line and left as it was."""
import hashlib
import json
import re
import threading
from pathlib import Path

import paddle
import pytest

from frn import results
from tests.conftest import run_entry, tiny_flags
from utils.errors import UserError

ACC_LINE = re.compile(r"^(\d+) Test Acc = ([\d.]+)% \+- ([\d.]+)%$", re.M)
TEST = ["--method", "protonet", "--n_shot", "1", "--test_n_episode", "6"]


@pytest.fixture(scope="module")
def model(tiny_data, tmp_path_factory) -> Path:
    """A ProtoNet pre-trained for one epoch."""
    ckpt = tmp_path_factory.mktemp("results")
    code, _, err = run_entry("pretrain.py", tiny_flags(tiny_data, ckpt, "--method", "protonet", "--epoch", "1",
                                                       "--batch_size", "16", "--val_n_episode", "4"))
    assert code == 0, err
    return ckpt / "demo" / "Conv4_protonet_pretrain" / "best_model.pdparams"


def test(tiny_data, model, *extra) -> tuple:
    return run_entry("test.py", tiny_flags(tiny_data, model.parent.parent, *TEST, "--model_path", model, *extra))


def test_each_task_appends_a_complete_record_beside_the_checkpoint(tiny_data, model):
    path = model.parent / "results.json"
    path.unlink(missing_ok=True)
    code, out, err = test(tiny_data, model, "--test_task_nums", "2", "--seed", "3")
    assert code == 0, err
    records = json.loads(path.read_text())
    printed = [(int(n), float(m), float(ci)) for n, m, ci in ACC_LINE.findall(out)]
    assert len(records) == len(printed) == 2
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    for task, (record, (episodes, mean, interval)) in enumerate(zip(records, printed)):
        rounded = (round(record["accuracy"], 2), round(record["interval"], 2), record["episodes"])
        assert rounded == (mean, interval, episodes)
        assert (record["way"], record["shot"], record["query"], record["split"]) == (5, 1, 5, "novel")
        assert (record["seed"], record["task"]) == (3 + task, task)
        assert record["method"] == "protonet" and record["options"]["model"] == "Conv4"
        assert record["dataset"] == "demo" and record["data_path"] == str(tiny_data)
        assert record["checkpoint"] == str(model) and record["checkpoint_sha256"] == sha
        assert record["paddle"] == paddle.__version__
        assert record["wall_seconds"] > 0 and re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", record["date"])
    code, _, err = test(tiny_data, model)
    assert code == 0, err
    assert len(json.loads(path.read_text())) == 3, "a later run appends"


def test_result_file_flag(tiny_data, model, tmp_path):
    chosen = tmp_path / "table" / "mine.json"
    chosen.parent.mkdir()
    before = (model.parent / "results.json").read_text() if (model.parent / "results.json").exists() else None
    code, _, err = test(tiny_data, model, "--result_file", chosen)
    assert code == 0, err
    assert len(json.loads(chosen.read_text())) == 1
    after = (model.parent / "results.json").read_text() if (model.parent / "results.json").exists() else None
    assert after == before, "--result_file must replace the default file, not add to it"


@pytest.mark.parametrize("content", ["{not json", '{"accuracy": 50}'])
def test_a_file_that_is_not_a_result_list_is_refused_and_kept(tiny_data, model, tmp_path, content):
    path = tmp_path / "results.json"
    path.write_text(content)
    code, out, err = test(tiny_data, model, "--result_file", path)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and str(path) in lines[0], err
    assert not ACC_LINE.search(out), "refused before testing"
    assert path.read_text() == content


def test_concurrent_appends_keep_every_record(tmp_path):
    path = str(tmp_path / "results.json")

    def append(worker: int) -> None:
        for i in range(10):
            results.append_result(path, {"worker": worker, "i": i})
    threads = [threading.Thread(target=append, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = json.loads(Path(path).read_text())
    assert sorted((r["worker"], r["i"]) for r in records) == [(w, i) for w in range(6) for i in range(10)]
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"], "no temporary file left behind"


def test_an_interrupted_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    results.append_result(str(path), {"accuracy": 1.0})
    before = path.read_text()

    def broken_dump(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(results.json, "dump", broken_dump)
    with pytest.raises(KeyboardInterrupt):
        results.append_result(str(path), {"accuracy": 2.0})
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_result_file_none_writes_nothing(tiny_data, model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in model.parent.iterdir())
    code, out, err = test(tiny_data, model, "--result_file", "none")
    assert code == 0 and "results appended" not in out, err
    assert sorted(p.name for p in model.parent.iterdir()) == before


def test_a_missing_result_folder_is_refused_before_testing(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        results.check_result_file(str(tmp_path / "missing" / "results.json"))


def test_the_weak_shot_tests_write_their_records(simtrans_run):
    """Step 2 (the SimNet: pair F1 and the denoising ROC-AUC) and a classifier's accuracy."""
    simnet = json.loads((simtrans_run["simnet"] / "results.json").read_text())
    assert len(simnet) == 1 and simnet[0]["method"] == "simtrans_simnet"
    assert {"pair_f1", "roc_auc_savg1", "roc_auc_avg1", "checkpoint_sha256", "paddle", "date"} <= set(simnet[0])
    graph = simtrans_run["runs"] / "Conv4_simtrans_alternate_GCN_a0.1_avg1"
    classifier = json.loads((graph / "results.json").read_text())
    out = simtrans_run["out"]["eval"]
    images, mean, interval = ACC_LINE.search(out).groups()
    assert (classifier[0]["images"], round(classifier[0]["accuracy"], 2), round(classifier[0]["interval"], 2)) == \
        (int(images), float(mean), float(interval))
