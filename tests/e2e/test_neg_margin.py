"""Negative-Margin through the entry scripts on the tiny demo data: base training with a wider head
and a per-iteration schedule, meta-val selection, then test.py with the batched, the one-by-one
and the uncached fitting (the same accuracies)."""
import json
import re

import paddle
import pytest

from tests.conftest import run_script, tiny_flags

ACC_LINE = re.compile(r"^(\d+) Test Acc = ([\d.]+)% \+- ([\d.]+)%$", re.M)
FIT = ["--finetune_steps", "20"]  # keep the meta-test fits short


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """2 epochs of mmfewshot-style base training: SGD, linear warm-up from 0.25, step decay,
    a 10-row head for the 8 base classes, validation by fitted 5-way 1-shot episodes."""
    ckpt = tmp_path_factory.mktemp("ckpt")
    result = run_script("pretrain.py", *tiny_flags(
        tiny_data, ckpt, "--method", "neg_margin", "--epoch", "2", "--batch_size", "16", "--num_classes", "10",
        "--lr", "0.05", "--wd", "1e-4", "--no_nesterov", "--warmup_iters", "4", "--warmup_start", "0.25",
        "--milestones", "1", "--margin", "-0.02", "--n_shot", "1", "--val_n_episode", "10", *FIT))
    assert result.returncode == 0, result.stderr
    return ckpt, ckpt / "demo" / "Conv4_neg_margin_mmfs_cosineface_m-0.02_pretrain"


def test_base_training_writes_the_run_and_steps_the_schedule_per_iteration(trained):
    _, run = trained
    for name in ("best_model.pdparams", "last_model.pdparams", "output.log", "history.json", "curves.png"):
        assert (run / name).is_file(), name
    history = json.loads((run / "history.json").read_text())
    assert [h["val_acc"] is not None for h in history] == [True, True]
    # 96 base images / 16 = 6 iterations per epoch; the schedule counted all 12 of them
    assert paddle.load(str(run / "resume.pdstate"))["scheduler"]["last_epoch"] == 12
    assert history[1]["lr"] == pytest.approx(0.005)  # decayed at epoch 1


def test_batched_one_by_one_and_uncached_fitting_agree(trained, tiny_data):
    """The same accuracy line whatever the episode batch and the cache (that worker loaders leave
    the fits' NumPy stream alone: tests/frn/test_engine.py)."""
    ckpt, run = trained
    flags = tiny_flags(tiny_data, ckpt, "--method", "neg_margin", "--model_path", run / "best_model.pdparams",
                       "--n_shot", "2", "--n_query", "3", "--test_n_episode", "12", *FIT)
    outputs = [run_script("test.py", *flags, *extra) for extra in ([], ["--episode_batch", "1"],
                                                                 ["--episode_batch", "5"], ["--no_feature_cache"])]
    assert all(out.returncode == 0 for out in outputs), [out.stderr for out in outputs]
    lines = [ACC_LINE.search(out.stdout).groups() for out in outputs]
    assert lines[0][0] == "12" and len(set(lines)) == 1, lines


def test_bl0_protocol_with_adam_warmup_cosine_and_lag(tiny_data, tmp_path):
    result = run_script("pretrain.py", *tiny_flags(
        tiny_data, tmp_path, "--method", "neg_margin", "--protocol", "bl0", "--metric", "neg-softmax",
        "--margin", "-0.3", "--epoch", "1", "--batch_size", "16", "--optimizer", "adam", "--lr", "3e-3",
        "--lr_schedule", "cosine", "--warmup_iters", "3", "--warmup_start", "0.0625", "--eta_min", "1e-6",
        "--lr_lag", "1", "--n_shot", "5", "--n_query", "4", "--val_n_episode", "5", "--finetune_epochs", "2"))
    assert result.returncode == 0, result.stderr
    run = tmp_path / "demo" / "Conv4_neg_margin_bl0_neg-softmax_m-0.3_pretrain"
    assert (run / "best_model.pdparams").is_file()
    out = run_script("test.py", *tiny_flags(tiny_data, tmp_path, "--method", "neg_margin", "--protocol", "bl0",
                                            "--metric", "neg-softmax", "--model_path", run / "best_model.pdparams",
                                            "--test_n_episode", "6", "--finetune_epochs", "2"))
    assert out.returncode == 0 and ACC_LINE.search(out.stdout), out.stderr
