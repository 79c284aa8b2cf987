"""--visualdl DIR: loss, accuracy and learning rate per logged step and validation per epoch, in a
folder per run below DIR; VisualDL is optional (without it: one notice line, training goes on);
curves.png and history.json are written either way."""
import json
import sys
import types
from pathlib import Path

import pytest

from tests.conftest import run_entry, tiny_flags

RUN = Path("demo") / "Conv4_protonet_pretrain"
#: 2 epochs of the 96 base images in batches of 16: 6 steps per epoch, every 2nd one logged
PRETRAIN = ["--method", "protonet", "--epoch", "2", "--batch_size", "16", "--val_n_episode", "4", "--lr", "0.01"]
STEP_TAGS = {"train/loss", "train/acc", "train/lr"}
EPOCH_TAGS = {"epoch/train_loss", "epoch/train_acc", "epoch/lr", "val/acc", "val/loss"}


def pretrain(data: Path, tmp_path: Path, monkeypatch, *extra) -> tuple:
    from frn import engine
    original = engine.train_one_epoch

    def every_second_step(*args, **kwargs):  # log more than step 0 of these 6-step epochs
        return original(*args, **{**kwargs, "print_freq": 2})
    monkeypatch.setattr(engine, "train_one_epoch", every_second_step)
    flags = tiny_flags(data, tmp_path / "ckpt", *PRETRAIN, "--visualdl", tmp_path / "vdl", *extra)
    return run_entry("pretrain.py", flags)


def check_run_files(tmp_path: Path) -> None:
    run = tmp_path / "ckpt" / RUN
    assert (run / "curves.png").stat().st_size > 1000
    assert len(json.loads((run / "history.json").read_text())) == 2


class FakeWriter:
    """Records what VisualDL's LogWriter is given."""
    made = []

    def __init__(self, logdir: str):
        self.logdir, self.scalars, self.closed = logdir, [], False
        FakeWriter.made.append(self)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        assert isinstance(value, float) and isinstance(step, int)
        self.scalars.append((tag, step, value))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_scalars_per_logged_step_and_per_epoch(tiny_data, tmp_path, monkeypatch):
    FakeWriter.made.clear()
    monkeypatch.setitem(sys.modules, "visualdl", types.SimpleNamespace(LogWriter=FakeWriter))
    code, _, err = pretrain(tiny_data, tmp_path, monkeypatch)
    assert code == 0, err
    (writer,) = FakeWriter.made
    assert Path(writer.logdir) == tmp_path / "vdl" / RUN and writer.closed
    steps = {tag: [step for t, step, _ in writer.scalars if t == tag] for tag in STEP_TAGS | EPOCH_TAGS}
    for tag in STEP_TAGS:
        assert steps[tag] == [0, 2, 4, 6, 8, 10], tag  # global steps: epoch * 6 + step
    for tag in EPOCH_TAGS:
        assert steps[tag] == [0, 1], tag
    history = json.loads((tmp_path / "ckpt" / RUN / "history.json").read_text())
    val = [value for tag, _, value in writer.scalars if tag == "val/acc"]
    assert val == pytest.approx([h["val_acc"] for h in history])
    assert {value for tag, _, value in writer.scalars if tag == "train/lr"} == {0.01}
    check_run_files(tmp_path)


def test_without_visualdl_one_notice_and_training_goes_on(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "visualdl", None)  # import visualdl raises ImportError
    code, out, err = pretrain(tiny_data, tmp_path, monkeypatch)
    assert code == 0, err
    notices = [line for line in (out + err).splitlines() if "VisualDL" in line]
    assert len(notices) == 1 and "not installed" in notices[0] and "pip install visualdl" in notices[0], notices
    check_run_files(tmp_path)
    assert not (tmp_path / "vdl").exists()


def test_no_flag_no_visualdl(tiny_data, tmp_path, monkeypatch):
    """Without --visualdl, VisualDL is not even imported."""
    monkeypatch.setitem(sys.modules, "visualdl", None)
    code, out, err = run_entry("pretrain.py", tiny_flags(tiny_data, tmp_path / "ckpt", *PRETRAIN))
    assert code == 0 and "VisualDL" not in out + err, err


def test_with_the_real_visualdl(tiny_data, tmp_path, monkeypatch):
    visualdl = pytest.importorskip("visualdl")
    code, _, err = pretrain(tiny_data, tmp_path, monkeypatch)
    assert code == 0, err
    reader = visualdl.LogReader(file_path=str(next((tmp_path / "vdl" / RUN).glob("vdlrecords.*"))))
    assert STEP_TAGS | EPOCH_TAGS <= set(reader.get_tags()["scalar"])
    assert [record.id for record in reader.get_data("scalar", "train/loss")] == [0, 2, 4, 6, 8, 10]
    check_run_files(tmp_path)
