"""Two ranks on the CPU (gloo) through paddle.distributed.launch: DataParallel training, rank 0 writes."""
import json
import os
import subprocess
import sys

from tests.conftest import ROOT, tiny_flags


def test_two_process_pretraining(tiny_data, tmp_path):
    env = dict(os.environ, TQDM_DISABLE="1", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
               "--log_dir", str(tmp_path / "log"), str(ROOT / "pretrain.py"),
               *tiny_flags(tiny_data, tmp_path / "ckpt", "--method", "protonet", "--epoch", "1",
                           "--batch_size", "16", "--val_n_episode", "5")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    run = tmp_path / "ckpt" / "demo" / "Conv4_protonet_pretrain"
    assert (run / "best_model.pdparams").is_file() and (run / "resume.pdstate").is_file()
    log = (run / "output.log").read_text()
    # 8 base classes x 12 images = 96 images = 6 batches of 16, split between the two ranks
    assert "Epoch 0 | Batch 0/3 |" in log
    assert len(json.loads((run / "history.json").read_text())) == 1
