"""The run-folder rule: <checkpoint_dir>/<dataset>/<run> (the seed's folders), for --dataset custom
<checkpoint_dir>/custom/<data folder's name>/<run>, so two datasets never share a folder; a new
run into a folder holding checkpoints stops in one line before writing anything; --overwrite
starts afresh, --resume continues, --run_name names the folder."""
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_entry, run_script, tiny_flags

PRETRAIN = ["--method", "protonet", "--batch_size", "16", "--val_n_episode", "4", "--lr", "0.01"]


def snapshot(folder: Path) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def pretrain(data: Path, checkpoints: Path, *extra) -> tuple:
    return run_entry("pretrain.py", tiny_flags(data, checkpoints, *PRETRAIN, *extra))


def epochs_in(run: Path) -> list:
    return [h["epoch"] for h in json.loads((run / "history.json").read_text())]


@pytest.fixture
def finished(tiny_data, tmp_path) -> Path:
    """A finished 2-epoch run that kept a checkpoint of every epoch."""
    code, _, err = pretrain(tiny_data, tmp_path, "--epoch", "2", "--save_freq", "1")
    assert code == 0, err
    return tmp_path / "demo" / "Conv4_protonet_pretrain"


def test_the_run_folder_names_dataset_and_data_folder(finished):
    assert (finished / "best_model.pdparams").is_file() and epochs_in(finished) == [0, 1]


def test_a_new_run_into_a_finished_one_is_refused_and_writes_nothing(tiny_data, tmp_path, finished):
    before = snapshot(tmp_path)
    code, _, err = pretrain(tiny_data, tmp_path, "--epoch", "1")
    line = one_line_error(err)
    assert code != 0 and str(finished) in line
    for hint in ("--resume", "--overwrite", "--run_name"):
        assert hint in line, line
    assert snapshot(tmp_path) == before


def test_overwrite_starts_afresh_and_leaves_nothing_of_the_earlier_run(tiny_data, tmp_path, finished):
    code, _, err = pretrain(tiny_data, tmp_path, "--epoch", "1", "--save_freq", "1", "--overwrite")
    assert code == 0, err
    assert epochs_in(finished) == [0]
    assert not (finished / "2.pdparams").exists(), "a checkpoint of the earlier run survived --overwrite"
    assert (finished / "output.log").read_text().count("start:") == 1


def test_resume_is_unaffected(tiny_data, tmp_path):
    """In processes of their own, as a user runs them: Paddle names the optimizer state after the
    parameters' creation order, which differs inside this test session."""
    flags = tiny_flags(tiny_data, tmp_path, *PRETRAIN)
    first = run_script("pretrain.py", *flags, "--epoch", "1")
    assert first.returncode == 0, first.stderr
    run = tmp_path / "demo" / "Conv4_protonet_pretrain"
    resumed = run_script("pretrain.py", *flags, "--epoch", "2", "--resume", run)
    assert resumed.returncode == 0, resumed.stderr
    assert epochs_in(run) == [0, 1]
    assert "resuming at epoch 1" in (run / "output.log").read_text()


def test_resume_and_overwrite_together_are_refused(tiny_data, tmp_path, finished):
    before = snapshot(tmp_path)
    code, _, err = pretrain(tiny_data, tmp_path, "--epoch", "3", "--resume", finished, "--overwrite")
    assert code != 0 and "--resume" in one_line_error(err) and "--overwrite" in one_line_error(err)
    assert snapshot(tmp_path) == before


def test_resuming_another_folder_into_a_finished_run_is_refused(tiny_data, tmp_path, finished):
    """--resume continues the run it names; a run folder holding another run is still protected."""
    other = tmp_path / "elsewhere"
    shutil.copytree(finished, other)
    before = snapshot(finished)
    code, _, err = pretrain(tiny_data, tmp_path, "--epoch", "3", "--resume", other)
    assert code != 0 and "--overwrite" in one_line_error(err)
    assert snapshot(finished) == before


def copy_dataset(source: Path, target: Path) -> Path:
    """A copy of a dataset folder whose filelists point at the copy."""
    shutil.copytree(source, target)
    for name in ("base.json", "val.json", "novel.json"):
        path = target / name
        path.write_text(path.read_text().replace(str(source), str(target)))
    return target


def test_two_custom_data_folders_get_two_run_folders(tiny_data, tmp_path):
    other = copy_dataset(tiny_data, tmp_path / "data" / "other_glyphs")
    for data in (tiny_data, other):
        code, _, err = pretrain(data, tmp_path / "ckpt", "--epoch", "1", "--dataset", "custom")
        assert code == 0, err
    runs = sorted(p.parent.relative_to(tmp_path / "ckpt") for p in (tmp_path / "ckpt").rglob("best_model.*"))
    assert [str(r) for r in runs] == ["custom/glyphs/Conv4_protonet_pretrain",
                                      "custom/other_glyphs/Conv4_protonet_pretrain"]


def test_a_second_data_folder_under_a_benchmark_name_is_refused(tiny_data, tmp_path):
    """A named benchmark keeps the seed's <dataset>/<run> folders: another data folder trained
    under the same name meets the first run and stops in one line, writing nothing."""
    other = copy_dataset(tiny_data, tmp_path / "data" / "other_glyphs")
    code, _, err = pretrain(tiny_data, tmp_path / "ckpt", "--epoch", "1")
    assert code == 0, err
    before = snapshot(tmp_path / "ckpt")
    code, _, err = pretrain(other, tmp_path / "ckpt", "--epoch", "1")
    assert code != 0 and "--run_name" in one_line_error(err)
    assert snapshot(tmp_path / "ckpt") == before


def test_run_name_names_the_folder(tiny_data, tmp_path):
    code, _, err = pretrain(tiny_data, tmp_path, "--epoch", "1", "--run_name", "first try")
    assert code == 0, err
    assert (tmp_path / "demo" / "first try" / "best_model.pdparams").is_file()


@pytest.mark.parametrize("name", ["a/b", "..", "."])
def test_a_run_name_must_be_a_plain_folder_name(tiny_data, tmp_path, name):
    code, _, err = pretrain(tiny_data, tmp_path, "--epoch", "1", "--run_name", name)
    assert code != 0 and "--run_name" in one_line_error(err)
    assert not list(tmp_path.rglob("*.pdparams"))


def test_a_config_whose_stages_would_share_a_folder_is_refused(tmp_path, monkeypatch):
    """One --run_name for every stage of a config would make the runner skip the later stage as done."""
    from frn.configs import load_config, plan
    from tests.conftest import ROOT
    from utils.errors import UserError
    monkeypatch.setenv("DATA", str(tmp_path / "data"))
    config = load_config(str(ROOT / "configs" / "frn" / "mini_imagenet_resnet12.yaml"))
    with pytest.raises(UserError, match="would both write"):
        plan(config, ["--run_name", "mine"])
