"""Shared test setup: the repo root on sys.path, quiet progress bars, paths to shared data."""
import os
import sys
from pathlib import Path

import PIL.Image  # noqa: F401  (before Paddle: see utils/__init__.py)

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")

#: the parity fixtures (official PyTorch numbers); absent on a user's clone
FIXTURES = Path(os.environ.get("FSL_FIXTURES", ROOT.parent / "shared" / "fixtures"))
#: the real datasets shared with the project; absent on a user's clone
DATASETS = Path(os.environ.get("FSL_DATASETS", ROOT.parent / "shared" / "datasets"))


def need(path: Path) -> Path:
    """Skip the calling test when `path` does not exist (e.g. no ../shared on a user's clone)."""
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


def run_script(script: str, *args: str, cwd=None, timeout: int = 600):
    """Run an entry script of the repo in a fresh interpreter; returns the CompletedProcess."""
    import subprocess
    env = dict(os.environ, TQDM_DISABLE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


#: a small 18-class dataset (8 base / 5 val / 5 novel) at 32x32: enough for 5-way episodes
TINY = dict(n_classes=18, images_per_class=12, image_size=32, splits=(8, 5, 5))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """The embedded demo dataset at tiny size, with its filelists written by the repo's writer."""
    from data.demo import build_demo_dataset
    folder = Path(build_demo_dataset(str(tmp_path_factory.mktemp("tiny") / "glyphs"), seed=0, **TINY))
    result = run_script("write_miniImagenet_filelist.py", "--data_path", folder)
    assert result.returncode == 0, result.stderr
    return folder


def tiny_flags(data: Path, checkpoints: Path, *extra: str) -> list:
    """Flags shared by the e2e tests: Conv-4 on the tiny dataset, CPU, no workers."""
    return ["--dataset", "demo", "--data_path", str(data), "--model", "Conv4", "--image_size", "32",
            "--num_workers", "0", "--n_query", "5", "--checkpoint_dir", str(checkpoints), *extra]


# ----- SimTrans: one tiny weak-shot pipeline shared by the e2e and bad-input tests -----------
def run_entry(script: str, argv) -> tuple:
    """Run an entry script's main(argv) in this process: (exit code, stdout, stderr). Much faster
    than a subprocess; a traceback would still fail the calling test."""
    import contextlib
    import importlib.util
    import io
    spec = importlib.util.spec_from_file_location(f"entry_{Path(script).stem}", ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            module.main([str(a) for a in argv])
        except SystemExit as stop:
            code = stop.code
    return code, out.getvalue(), err.getvalue()


def simtrans_flags(data: Path, checkpoints: Path, *extra) -> list:
    """Conv-4 at 32 px on a tiny weak-shot folder, CPU, no workers, no ImageNet weights."""
    return ["--dataset", "demo", "--data_path", data, "--model", "Conv4", "--image_size", "32", "--num_workers", "0",
            "--checkpoint_dir", checkpoints, "--imagenet_pretrained", "0", *extra]


@pytest.fixture(scope="session")
def simtrans_run(tiny_data, tmp_path_factory) -> dict:
    """Steps 0, 1, 2, 3a, 3b of SimTrans (1-3 epochs each) on a benchmark made from the tiny data,
    plus a second benchmark (another seed) for the tests that mix datasets."""
    from data.weakshot import build_benchmark
    root = tmp_path_factory.mktemp("simtrans")
    bench, other = root / "bench", root / "other"
    build_benchmark(str(tiny_data), str(bench), 0.25, 0.5, 4, 2, seed=0)
    build_benchmark(str(tiny_data), str(other), 0.25, 0.5, 4, 2, seed=1)
    ckpt = root / "checkpoints"
    runs = ckpt / "demo"
    flags = lambda *extra: simtrans_flags(bench, ckpt, *extra)  # noqa: E731
    outputs = {}

    def step(name, script, *extra):
        code, out, err = run_entry(script, flags(*extra))
        assert code == 0, f"{name}: {err}"
        outputs[name] = out

    step("naive", "pretrain.py", "--method", "simtrans_naive", "--num_epoch", "2", "--batch_size", "8",
         "--lr", "0.02", "--lr_interval", "1", "--lr_decay", "0.5", "--backbone", "conv4")
    step("simnet", "pretrain.py", "--method", "simtrans_simnet", "--num_epoch", "2", "--batch_size", "8",
         "--head_type", "4", "--beta", "0.1", "--batch_class_num", "4", "--batch_class_num_B", "2",
         "--f1_batches", "2", "--similarity_pretrained", runs / "Conv4_simtrans_naive" / "best_model.pdparams")
    simnet = runs / "Conv4_simtrans_simnet_h4_b0.1"
    step("weights", "test.py", "--method", "simtrans_simnet", "--f1_batches", "2",
         "--similarity_net", simnet / "best_model.pdparams")
    step("main", "pretrain.py", "--method", "simtrans_main", "--num_epoch", "2", "--batch_size", "8",
         "--load_dir", simnet / "similarity")
    step("alternate", "pretrain.py", "--method", "simtrans_alternate", "--num_epoch", "3", "--cls", "8",
         "--gcn", "16", "--load_dir", simnet / "similarity", "--similarity_net", simnet / "best_model.pdparams",
         "--pretrain_path", runs / "Conv4_simtrans_main_savg1" / "best_model.pdparams")
    step("eval", "test.py", "--method", "simtrans_alternate", "--model_path",
         runs / "Conv4_simtrans_alternate_GCN_a0.1_avg1" / "best_model.pdparams")
    return {"bench": bench, "other": other, "checkpoints": ckpt, "runs": runs, "simnet": simnet, "out": outputs}


# ----- MTL: one tiny pipeline shared by the e2e and bad-input tests -------------------------
def tiny_mtl_flags(data: Path, checkpoints: Path, *extra: str) -> list:
    """The e2e flags with MTL on a narrow ResNet-25 (widths 4-8-16) instead of Conv-4."""
    flags = tiny_flags(data, checkpoints, "--method", "mtl", "--widths", "4,8,16", *extra)
    flags[flags.index("--model") + 1] = "ResNet25"
    return flags


@pytest.fixture(scope="session")
def mtl_run(tiny_data, tmp_path_factory) -> dict:
    """MTL pre-trained (2 epochs, official flag names) then meta-trained with hard tasks (2 epochs
    of 4 tasks, a meta-batch of 2 plus 1 hard task), once for the e2e and the bad-input tests."""
    ckpt = tmp_path_factory.mktemp("mtl")
    runs = ckpt / "demo"
    pretrained = runs / "ResNet25_mtl_pretrain" / "best_model.pdparams"

    def step(name: str, script: str, *extra) -> None:
        code, _, err = run_entry(script, tiny_mtl_flags(tiny_data, ckpt, *extra))
        assert code == 0, f"{name}: {err}"

    step("pretrain", "pretrain.py", "--pre_max_epoch", "2", "--pre_batch_size", "16", "--val_n_episode", "4",
         "--pre_step_size", "1")
    step("meta_train", "meta_train.py", "--max_epoch", "2", "--num_batch", "4", "--update_step", "5",
         "--val_n_episode", "4", "--init_weights", pretrained, "--ht_meta_batch", "2", "--ht_hard_tasks", "1")
    return {"checkpoints": ckpt, "pretrained": pretrained,
            "meta_trained": runs / "ResNet25_mtl_ht2_5way_1shot_metatrain" / "best_model.pdparams"}
