"""The seed's three commands end to end on the tiny demo data: pretrain -> meta-train -> test."""
import json
import re

import paddle
import pytest

from tests.conftest import run_script, tiny_flags

ACC_LINE = re.compile(r"^(\d+) Test Acc = ([\d.]+)% \+- ([\d.]+)%$", re.M)


def acc_line(output: str):
    match = ACC_LINE.search(output)
    assert match, output
    return int(match.group(1)), float(match.group(2)), float(match.group(3))


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """Pretrain stl_frn for 2 epochs, then meta-train meta_frn for 2 epochs."""
    ckpt = tmp_path_factory.mktemp("ckpt")
    pre = run_script("pretrain.py", *tiny_flags(tiny_data, ckpt, "--method", "stl_frn", "--epoch", "2",
                                                "--batch_size", "16", "--lr", "0.01", "--val_n_episode", "20"))
    assert pre.returncode == 0, pre.stderr
    pre_dir = ckpt / "demo" / "Conv4_stl_frn_pretrain"
    meta = run_script("meta_train.py", *tiny_flags(
        tiny_data, ckpt, "--method", "meta_frn", "--train_n_way", "5", "--n_shot", "2", "--n_query", "4",
        "--epoch", "2", "--train_n_episode", "5", "--val_n_episode", "20",
        "--pretrain_path", pre_dir / "best_model.pdparams"))
    assert meta.returncode == 0, meta.stderr
    return ckpt, pre, meta


def test_pretrain_writes_checkpoints_log_and_curves(trained):
    ckpt, pre, _ = trained
    run = ckpt / "demo" / "Conv4_stl_frn_pretrain"
    for name in ("best_model.pdparams", "last_model.pdparams", "resume.pdstate", "output.log",
                 "history.json", "curves.png"):
        assert (run / name).is_file(), name
    log = (run / "output.log").read_text()
    for pattern in (r"Epoch 0 \| Batch 0/\d+ \| Loss [\d.]+", r"val loss is [\d.]+, val acc is [\d.]+",
                    r"model best acc is [\d.]+, best acc epoch is \d", r"This epoch use [\d.]+ minutes",
                    r"train loss is [\d.]+, train acc is [\d.]+"):
        assert re.search(pattern, log), pattern
    assert len(json.loads((run / "history.json").read_text())) == 2


def test_meta_train_run_folder_is_named_like_the_seed(trained):
    ckpt, _, _ = trained
    run = ckpt / "demo" / "Conv4_meta_frn_5way_2shot_metatrain"
    assert (run / "best_model.pdparams").is_file() and (run / "output.log").is_file()


def test_pretrained_cat_mat_is_dropped_and_scale_kept(trained):
    ckpt, _, _ = trained
    pre = paddle.load(str(ckpt / "demo" / "Conv4_stl_frn_pretrain" / "last_model.pdparams"))
    assert "cat_mat" in pre["state_dict"] and pre["identity"]["family"] == "FRN"


def test_test_py_prints_the_seed_line_per_task_and_the_mean(trained, tiny_data):
    ckpt, _, _ = trained
    model = ckpt / "demo" / "Conv4_meta_frn_5way_2shot_metatrain" / "best_model.pdparams"
    out = run_script("test.py", *tiny_flags(tiny_data, ckpt, "--method", "meta_frn", "--n_shot", "1",
                                            "--n_query", "5", "--model_path", model, "--test_n_episode", "60",
                                            "--test_task_nums", "2"))
    assert out.returncode == 0, out.stderr
    lines = ACC_LINE.findall(out.stdout)
    assert len(lines) == 2 and all(int(n) == 60 for n, _, _ in lines)
    assert "Mean over 2 tasks" in out.stdout
    # Two tasks are two different episode sets (seed, seed + 1); 2 tiny epochs are too little
    # to assert accuracy here: scripts/demo.sh measures that at full demo size.
    assert all(0.0 <= float(acc) <= 100.0 and float(ci) > 0.0 for _, acc, ci in lines)


def test_cache_and_per_episode_paths_agree_and_episodes_replay(trained, tiny_data, tmp_path):
    ckpt, _, _ = trained
    model = ckpt / "demo" / "Conv4_meta_frn_5way_2shot_metatrain" / "best_model.pdparams"
    flags = tiny_flags(tiny_data, ckpt, "--method", "meta_frn", "--n_shot", "2", "--n_query", "3",
                       "--model_path", model, "--test_n_episode", "15", "--seed", "5")
    episodes = tmp_path / "episodes.json"
    cached = run_script("test.py", *flags, "--save_episodes", episodes)
    direct = run_script("test.py", *flags, "--no_feature_cache")
    on_disk = run_script("test.py", *flags, "--feature_cache_gb", "0")  # the cache in a temporary file
    replay = run_script("test.py", *tiny_flags(tiny_data, ckpt, "--method", "meta_frn", "--model_path", model,
                                               "--episodes_file", episodes))
    runs = (cached, direct, on_disk, replay)
    assert all(r.returncode == 0 for r in runs), "".join(r.stderr for r in runs)
    results = [ACC_LINE.search(r.stdout).groups() for r in runs]
    assert results[0] == results[1] == results[2] == results[3]
    spec = json.loads(episodes.read_text())
    assert (spec["way"], spec["shot"], spec["query"], len(spec["episodes"])) == (5, 2, 3, 15)
    first = spec["episodes"][0]
    assert len(first["classes"]) == 5 and all(len(s) == 2 for s in first["support"])
    assert all(len(q) == 3 for q in first["query"])


def test_same_seed_same_episodes_other_seed_other_episodes(trained, tiny_data, tmp_path):
    ckpt, _, _ = trained
    model = ckpt / "demo" / "Conv4_meta_frn_5way_2shot_metatrain" / "best_model.pdparams"
    saved = []
    for seed, name in ((3, "a"), (3, "b"), (4, "c")):
        path = tmp_path / f"{name}.json"
        out = run_script("test.py", *tiny_flags(tiny_data, ckpt, "--model_path", model, "--test_n_episode", "5",
                                                "--seed", seed, "--save_episodes", path))
        assert out.returncode == 0, out.stderr
        saved.append(json.loads(path.read_text())["episodes"])
    assert saved[0] == saved[1] and saved[0] != saved[2]


def test_protonet_pipeline(tiny_data, tmp_path):
    pre = run_script("pretrain.py", *tiny_flags(tiny_data, tmp_path, "--method", "protonet", "--epoch", "1",
                                                "--batch_size", "16", "--val_n_episode", "10"))
    assert pre.returncode == 0, pre.stderr
    run = tmp_path / "demo" / "Conv4_protonet_pretrain"
    meta = run_script("meta_train.py", *tiny_flags(
        tiny_data, tmp_path, "--method", "protonet", "--train_n_way", "5", "--n_shot", "1", "--n_query", "3",
        "--epoch", "1", "--train_n_episode", "4", "--val_n_episode", "10",
        "--pretrain_path", run / "best_model.pdparams"))
    assert meta.returncode == 0, meta.stderr
    model = tmp_path / "demo" / "Conv4_protonet_5way_1shot_metatrain" / "best_model.pdparams"
    out = run_script("test.py", *tiny_flags(tiny_data, tmp_path, "--method", "protonet", "--model_path", model,
                                            "--test_n_episode", "20"))
    assert out.returncode == 0 and ACC_LINE.search(out.stdout), out.stderr


def test_resnet12_pipeline(tiny_data, tmp_path):
    """The full-width ResNet-12 through meta-training and test (tiny images keep it fast)."""
    flags = lambda *extra: [*tiny_flags(tiny_data, tmp_path, *extra)[:4], "--model", "ResNet12",
                            *tiny_flags(tiny_data, tmp_path, *extra)[6:]]
    meta = run_script("meta_train.py", *flags("--method", "meta_frn", "--train_n_way", "5", "--n_shot", "1",
                                              "--n_query", "2", "--epoch", "1", "--train_n_episode", "2",
                                              "--val_n_episode", "5"))
    assert meta.returncode == 0, meta.stderr
    model = tmp_path / "demo" / "ResNet12_meta_frn_5way_1shot_metatrain" / "best_model.pdparams"
    out = run_script("test.py", *flags("--method", "meta_frn", "--model_path", model, "--test_n_episode", "10"))
    assert out.returncode == 0 and acc_line(out.stdout)[0] == 10, out.stderr
