"""Killing a training run at any moment and resuming it gives the uninterrupted run's weights."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest

from tests.conftest import ROOT, run_script, tiny_flags

STAGES = {
    "pretrain": ("pretrain.py", ["--method", "stl_frn", "--batch_size", "16", "--val_n_episode", "5"],
                 "Conv4_stl_frn_pretrain"),
    "meta_train_official_epoch": ("meta_train.py", ["--method", "meta_frn", "--train_n_way", "5", "--n_shot", "1",
                                                    "--n_query", "2", "--train_n_episode", "0", "--val_n_episode", "5"],
                                  "Conv4_meta_frn_5way_1shot_metatrain"),
    # a per-iteration schedule (warm-up + cosine) must resume at the right iteration
    "pretrain_per_iteration_schedule": ("pretrain.py", ["--method", "neg_margin", "--batch_size", "16",
                                                        "--val_n_episode", "5", "--finetune_steps", "10",
                                                        "--lr_schedule", "cosine", "--warmup_iters", "8"],
                                        "Conv4_neg_margin_mmfs_cosineface_m-0.01_pretrain"),
}


def weights(path):
    return {k: np.asarray(v) for k, v in paddle.load(str(path))["state_dict"].items()}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_kill_and_resume_matches_uninterrupted(stage, tiny_data, tmp_path):
    script, extra, run_name = STAGES[stage]
    epochs = ["--epoch", "3", "--milestones", "1", "--lr", "0.01"]
    straight = run_script(script, *tiny_flags(tiny_data, tmp_path / "a", *extra, *epochs))
    assert straight.returncode == 0, straight.stderr

    flags = tiny_flags(tiny_data, tmp_path / "b", *extra, *epochs)
    run_dir = tmp_path / "b" / "demo" / run_name
    env = dict(os.environ, TQDM_DISABLE="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(ROOT / script), *flags], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (run_dir / "resume.pdstate").exists() and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # land somewhere inside the second epoch
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = run_script(script, *flags, "--resume", run_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at epoch" in (run_dir / "output.log").read_text()

    expected = weights(tmp_path / "a" / "demo" / run_name / "last_model.pdparams")
    actual = weights(run_dir / "last_model.pdparams")
    assert expected.keys() == actual.keys()
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)
