"""MTL's three entry points end to end on the tiny demo data, with the official flag names."""
import json
import re

import numpy as np
import paddle
import pytest

from tests.conftest import run_script, tiny_mtl_flags

ACC = re.compile(r"^(\d+) Test Acc = ([\d.]+)% \+- ([\d.]+)%$", re.M)


def test_pretraining_writes_its_run_and_validates_with_the_preval_inner_loop(mtl_run):
    run = mtl_run["pretrained"].parent
    assert {"best_model.pdparams", "last_model.pdparams", "history.json", "curves.png", "output.log"} <= \
        {p.name for p in run.iterdir()}
    history = json.loads((run / "history.json").read_text())
    assert len(history) == 2 and all(h["val_acc"] is not None for h in history)
    assert history[1]["lr"] == pytest.approx(0.1 * 0.2)      # StepLR(--pre_step_size 1, --pre_gamma 0.2)
    state = paddle.load(str(run / "best_model.pdparams"))["state_dict"]
    assert "pre_fc.2.weight" in state and not any("mtl_" in k for k in state)


def test_meta_training_with_hard_tasks(mtl_run):
    run = mtl_run["meta_trained"].parent
    log = (run / "output.log").read_text()
    assert "Batch 0/6" in log          # 4 regular tasks + 2 hard tasks per epoch
    history = json.loads((run / "history.json").read_text())
    assert len(history) == 2
    state = paddle.load(str(run / "best_model.pdparams"))["state_dict"]
    assert any(k.endswith("mtl_weight") for k in state) and "base_learner.fc1_w" in state
    assert not any(k.startswith("pre_fc") for k in state)


def test_meta_test_prints_the_seed_line_and_caching_changes_nothing(mtl_run, tiny_data):
    model = mtl_run["meta_trained"]
    outputs = []
    for extra in ([], ["--no_feature_cache"]):
        result = run_script("test.py", *tiny_mtl_flags(tiny_data, mtl_run["checkpoints"], "--eval_weights", model,
                                                       "--update_step", "5", "--shot", "5", "--test_n_episode", "6", *extra))
        assert result.returncode == 0, result.stderr
        outputs.append(ACC.findall(result.stdout))
    assert len(outputs[0]) == 1 and outputs[0][0][0] == "6"
    assert outputs[0] == outputs[1]


def test_meta_training_resumes_exactly(tiny_data, tmp_path, mtl_run):
    """Two Adam groups, the step schedule and the epoch streams survive --resume."""
    pre = mtl_run["pretrained"]
    common = ["--num_batch", "2", "--update_step", "3", "--val_n_episode", "2", "--init_weights", pre,
              "--step_size", "1", "--meta_lr2", "0.01"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run_script("meta_train.py", *tiny_mtl_flags(tiny_data, straight, *common, "--max_epoch", "2")).returncode == 0
    assert run_script("meta_train.py", *tiny_mtl_flags(tiny_data, resumed, *common, "--max_epoch", "1")).returncode == 0
    folder = resumed / "demo" / "ResNet25_mtl_5way_1shot_metatrain"
    result = run_script("meta_train.py", *tiny_mtl_flags(tiny_data, resumed, *common, "--max_epoch", "2", "--resume", folder))
    assert result.returncode == 0, result.stderr
    a = paddle.load(str(straight / "demo" / "ResNet25_mtl_5way_1shot_metatrain" / "last_model.pdparams"))["state_dict"]
    b = paddle.load(str(folder / "last_model.pdparams"))["state_dict"]
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)
