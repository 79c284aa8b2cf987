"""Paper-row configs (configs/): every row parses with the entry scripts' own parsers, each
stage's input folder is the output folder of the stage before it, and `--config` on an entry
script gives the same flags the runner passes."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from frn.configs import expand, load_config, plan, stage_references, stages_of
from tests.conftest import ROOT
from utils.errors import UserError

CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if not p.name.startswith("_"))
#: flags through which a stage reads what an earlier training stage wrote
INPUT_FLAGS = ("--pretrain_path", "--model_path", "--similarity_pretrained", "--similarity_net", "--load_dir",
               "--init_weights", "--eval_weights")


@pytest.fixture
def data_variables(monkeypatch, tmp_path):
    for name in ("DATA", "SPLITS", "WS", "MODEL_PATH", "IMAGENET", "WEBVISION", "CUB", "IMAGENET_R50"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))


def test_there_are_configs():
    assert CONFIGS, "configs/ holds no paper row"


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT / "configs")) for p in CONFIGS])
def test_every_row_parses_and_chains(path, data_variables):
    config = load_config(str(path))
    assert config.get("row"), f"{path}: say which row it is (row:)"
    steps = plan(config)          # parses every entry-point stage with its own parser
    written = {run_dir for _, _, run_dir in steps if run_dir}
    for name, argv, _ in steps:
        for flag in INPUT_FLAGS:
            if flag in argv:
                value = argv[argv.index(flag) + 1]
                earlier = [d for d in written if value.startswith(d)]
                stage = stages_of(config)[name]
                if stage_references(stage.get("flags", {}).get(flag.lstrip("-"), "")):
                    assert earlier, f"{path}: stage {name} reads {value}, which no training stage writes"


def test_a_reference_to_a_missing_stage_is_one_line(tmp_path, data_variables):
    bad = tmp_path / "bad.yaml"
    bad.write_text("row: x\nstages:\n  test:\n    script: test.py\n"
                   "    flags: {method: protonet, model_path: '{nowhere}/best_model.pdparams'}\n")
    with pytest.raises(UserError, match="nowhere"):
        plan(load_config(str(bad)))


def test_a_missing_variable_names_itself(tmp_path, monkeypatch):
    monkeypatch.delenv("SOMEDATA", raising=False)
    bad = tmp_path / "bad.yaml"
    bad.write_text("row: x\nstages:\n  test:\n    script: test.py\n    flags: {method: protonet, data_path: '${SOMEDATA}'}\n")
    with pytest.raises(UserError, match="SOMEDATA"):
        plan(load_config(str(bad)))


def test_base_files_merge_under_the_row(tmp_path):
    (tmp_path / "_base_.yaml").write_text("common: {model: Conv4, gpu: true}\nstages:\n  test:\n    script: test.py\n"
                                          "    flags: {n_shot: 1, method: protonet}\n")
    (tmp_path / "row.yaml").write_text("_base_: _base_.yaml\nrow: r\ncommon: {model: ResNet12}\n"
                                       "stages:\n  test:\n    flags: {n_shot: 5}\n")
    config = load_config(str(tmp_path / "row.yaml"))
    assert config["common"] == {"model": "ResNet12", "gpu": True}
    assert config["stages"]["test"] == {"script": "test.py", "flags": {"n_shot": 5, "method": "protonet"}}


def test_null_removes_what_the_base_set(tmp_path, data_variables):
    """`pretrain: null` drops a base stage, `pretrain_path: null` a flag, `1-shot: null` a paper number;
    the stages keep the base's order."""
    (tmp_path / "_base_.yaml").write_text(
        "paper: {1-shot: '1', 5-shot: '5'}\ncommon: {data_path: '${DATA}', model: Conv4}\nstages:\n"
        "  pretrain: {script: pretrain.py, flags: {method: protonet}}\n"
        "  meta_train: {script: meta_train.py,\n"
        "               flags: {method: protonet, pretrain_path: '{pretrain}/best_model.pdparams'}}\n"
        "  test: {script: test.py, flags: {method: protonet, model_path: '{meta_train}/best_model.pdparams'}}\n")
    (tmp_path / "row.yaml").write_text("_base_: _base_.yaml\nrow: r\ncommon:\npaper: {1-shot: null}\nstages:\n"
                                       "  test: {flags: {n_shot: 5}}\n  pretrain: null\n"
                                       "  meta_train: {flags: {pretrain_path: null}}\n")
    config = load_config(str(tmp_path / "row.yaml"))
    assert config["paper"] == {"5-shot": "5"}
    assert config["common"]["model"] == "Conv4", "an empty section must not remove the base's"
    steps = plan(config)
    assert [name for name, _, _ in steps] == ["meta_train", "test"]
    assert "--pretrain_path" not in steps[0][1]
    assert steps[1][1][steps[1][1].index("--model_path") + 1] == f"{steps[0][2]}/best_model.pdparams"


def test_a_finished_stage_is_found_from_any_folder(tmp_path, monkeypatch):
    """The stages run in the repository, so a relative run folder is the repository's, not the
    caller's current folder."""
    from frn import configs
    monkeypatch.setattr(configs, "REPO", tmp_path / "repo")
    (tmp_path / "repo" / "checkpoints" / "run").mkdir(parents=True)
    (tmp_path / "repo" / "checkpoints" / "run" / "best_model.pdparams").write_bytes(b"")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert configs.done("./checkpoints/run")
    assert not configs.done("./checkpoints/other")
    assert not configs.done(None)


def test_an_empty_variable_takes_the_default(tmp_path, monkeypatch):
    """As the shell's ${CKPT:-./checkpoints}: an empty value is unset."""
    monkeypatch.setenv("CKPT", "")
    config = {"_path": "row.yaml", "variables": {"CKPT": "./checkpoints"}}
    from frn.configs import variable
    assert variable("CKPT", config) == "./checkpoints"


def test_values_from_the_environment_are_not_read_again(monkeypatch):
    """A variable's value is used as it is, even with braces in it; ${NAME} is not a stage."""
    monkeypatch.setenv("DATA", "/data/{odd}")
    config = {"_path": "row.yaml", "stages": {"pretrain": {}}}
    assert expand("${DATA}/x --{pretrain}", config, {"pretrain": "/runs/p"}) == "/data/{odd}/x --/runs/p"
    assert stage_references("${DATA}/{pretrain}/best_model.pdparams") == ["pretrain"]
    assert stage_references("${MODEL_PATH}") == []


def test_training_only_flags_do_not_reach_the_test_stage(tmp_path, data_variables):
    (tmp_path / "row.yaml").write_text("row: r\ncommon: {data_path: '${DATA}', model: Conv4}\nstages:\n"
                                       "  train:\n    script: pretrain.py\n    flags: {method: protonet}\n"
                                       "  test:\n    script: test.py\n"
                                       "    flags: {method: protonet, model_path: '{train}/best_model.pdparams'}\n")
    steps = plan(load_config(str(tmp_path / "row.yaml")), ["--epoch", "3", "--num_workers", "0"])
    train_argv, test_argv = steps[0][1], steps[1][1]
    assert "--epoch" in train_argv and "--epoch" not in test_argv
    assert "--num_workers" in test_argv


def test_entry_script_reads_its_stage_of_a_config(tmp_path, data_variables):
    """`test.py --config F --stage S --help` works and an ambiguous config asks for --stage."""
    path = tmp_path / "row.yaml"
    path.write_text("row: r\ncommon: {model: Conv4}\nstages:\n"
                    "  one:\n    script: test.py\n    flags: {method: protonet, n_shot: 1}\n"
                    "  five:\n    script: test.py\n    flags: {method: protonet, n_shot: 5}\n")
    from frn.args import parse, test_parser
    assert parse(test_parser(), ["--config", str(path), "--stage", "five"]).n_shot == 5
    assert parse(test_parser(), ["--config", str(path), "--stage", "five", "--n_shot", "3"]).n_shot == 3
    with pytest.raises(UserError, match="--stage"):
        parse(test_parser(), ["--config", str(path)])
    result = subprocess.run([sys.executable, str(ROOT / "test.py"), "--config", str(path)], capture_output=True,
                            text=True, cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0 and "--stage" in result.stderr


def test_runner_dry_run_prints_every_stage(data_variables):
    row = next((p for p in CONFIGS if "frn" in p.parts), None)
    if row is None:
        pytest.skip("no FRN row")
    result = subprocess.run([sys.executable, "-m", "frn.configs", str(row), "--dry_run"], capture_output=True,
                            text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    names = list(stages_of(load_config(str(row))))
    assert all(f"[{name}]" in result.stdout for name in names)
    assert Path(row).exists()


def test_overwrite_reruns_finished_stages(tmp_path, monkeypatch, capsys):
    """A finished training stage is skipped, unless --overwrite asks for every stage afresh."""
    from frn import configs
    monkeypatch.setattr(configs, "REPO", tmp_path / "repo")
    row = tmp_path / "row.yaml"
    row.write_text("row: r\nstages:\n  pretrain:\n    script: pretrain.py\n"
                   "    flags: {method: protonet, model: Conv4, data_path: /data/mine}\n")
    finished = tmp_path / "repo" / "checkpoints" / "mini_imagenet" / "Conv4_protonet_pretrain"
    finished.mkdir(parents=True)
    (finished / "best_model.pdparams").write_bytes(b"")
    configs.run(str(row), dry_run=True)
    assert "skipped" in capsys.readouterr().out
    configs.run(str(row), ["--overwrite"], dry_run=True)
    out = capsys.readouterr().out
    assert "skipped" not in out and "pretrain.py" in out and "--overwrite" in out


# ---------------------------------------------------------------- unfinished training

def protonet_row(tmp_path) -> Path:
    row = tmp_path / "row.yaml"
    row.write_text("row: r\ncommon: {method: protonet, model: Conv4, data_path: /data/mine}\nstages:\n"
                   "  train:\n    script: meta_train.py\n    flags: {epoch: 5}\n"
                   "  test:\n    script: test.py\n    flags: {model_path: '{train}/best_model.pdparams'}\n")
    return row


def trained_folder(tmp_path, epochs: int, resume: bool = True, log: str = "start: {}\n", history: bool = True) -> Path:
    """The run folder of protonet_row's training stage after `epochs` epochs."""
    import json
    folder = tmp_path / "repo" / "checkpoints" / "mini_imagenet" / "Conv4_protonet_20way_5shot_metatrain"
    folder.mkdir(parents=True)
    (folder / "best_model.pdparams").write_bytes(b"")
    if resume:
        (folder / "resume.pdstate").write_bytes(b"")
    if history:
        (folder / "history.json").write_text(json.dumps([{"epoch": e, "val_acc": 50.0} for e in range(epochs)]))
    (folder / "output.log").write_text(log)
    return folder


@pytest.fixture
def repo(tmp_path, monkeypatch):
    from frn import configs
    monkeypatch.setattr(configs, "REPO", tmp_path / "repo")
    return configs


def test_an_unfinished_training_stage_is_resumed_not_skipped(tmp_path, repo, capsys):
    folder = trained_folder(tmp_path, epochs=2)
    repo.run(str(protonet_row(tmp_path)), dry_run=True)
    out = capsys.readouterr().out
    assert "skipped" not in out and "resuming the unfinished run" in out and "2 of 5 epochs" in out
    train_line = next(line for line in out.splitlines() if line.startswith("[train] python"))
    assert train_line.split()[-2] == "--resume"
    assert os.path.normpath(train_line.split()[-1]) == os.path.relpath(folder, tmp_path / "repo")


def test_a_test_of_an_unfinished_training_is_refused(tmp_path, repo):
    trained_folder(tmp_path, epochs=2)
    with pytest.raises(UserError, match="did not finish .2 of 5 epochs.*resume it"):
        repo.run(str(protonet_row(tmp_path)), dry_run=True, only=["test"])


def test_an_unfinished_run_without_resume_state_asks_for_overwrite(tmp_path, repo):
    trained_folder(tmp_path, epochs=2, resume=False)
    with pytest.raises(UserError, match="--overwrite"):
        repo.run(str(protonet_row(tmp_path)), dry_run=True)


@pytest.mark.parametrize("kind", ["all epochs", "early stop", "given"])
def test_a_finished_or_given_training_is_skipped_and_tested(tmp_path, repo, capsys, kind):
    if kind == "all epochs":
        trained_folder(tmp_path, epochs=5)
    elif kind == "early stop":
        trained_folder(tmp_path, epochs=3, log="start: {}\nearly stop: the last 10 validation scores fell\n")
    else:  # a converted official checkpoint put in the folder by hand
        trained_folder(tmp_path, epochs=0, resume=False, history=False, log="")
    repo.run(str(protonet_row(tmp_path)), dry_run=True)
    out = capsys.readouterr().out
    assert "[train] done before" in out and "skipped" in out and "[test] python" in out
    repo.run(str(protonet_row(tmp_path)), dry_run=True, only=["test"])


def test_a_resumed_then_killed_run_is_unfinished_again(tmp_path, repo):
    """An early stop before a later resume does not count: the last start or resume decides."""
    from frn.configs import UNFINISHED, training_status
    folder = trained_folder(tmp_path, epochs=3, log="start: {}\nearly stop: x\nresuming at epoch 3: {}\n")
    assert training_status(os.path.relpath(folder, tmp_path / "repo"), 5)[0] == UNFINISHED


@pytest.mark.parametrize("path", [p for p in CONFIGS if any(s.get("script") == "test.py"
                                                           for s in stages_of(load_config(str(p))).values())],
                         ids=[str(p.relative_to(ROOT / "configs")) for p in CONFIGS
                              if any(s.get("script") == "test.py" for s in stages_of(load_config(str(p))).values())])
def test_training_flags_never_reach_a_rows_test_stage(path, data_variables):
    """Extra flags of the runner go only to the stages whose parser knows them (the scripts passed
    "$@" to test.py too, so a training-only flag broke the test stage)."""
    training_only = ["--epoch", "1", "--lr", "0.5", "--val_n_episode", "2", "--resume", "x"]
    config = load_config(str(path))
    for name, argv, folder in plan(config, training_only + ["--num_workers", "0"]):
        script = stages_of(config)[name].get("script")
        if script == "test.py":
            assert not {"--epoch", "--lr", "--val_n_episode", "--resume"} & set(argv), f"{name}: {argv}"
            assert "--num_workers" in argv
        elif folder:
            assert "--epoch" in argv


def test_a_flag_of_another_methods_options_stays_with_its_method(tmp_path, data_variables):
    """MTL's --pre_max_epoch reaches MTL's pre-training, never an FRN or ProtoNet stage."""
    row = tmp_path / "row.yaml"
    row.write_text("row: r\ncommon: {data_path: '${DATA}'}\nstages:\n"
                   "  mtl:\n    script: pretrain.py\n    flags: {method: mtl, model: ResNet25}\n"
                   "  proto:\n    script: meta_train.py\n    flags: {method: protonet, model: Conv4}\n")
    steps = {name: argv for name, argv, _ in plan(load_config(str(row)), ["--pre_max_epoch", "2"])}
    assert "--pre_max_epoch" in steps["mtl"] and "--pre_max_epoch" not in steps["proto"]


def test_the_imagenet_start_is_checked_before_the_first_stage_writes(tmp_path, repo, monkeypatch, data_variables):
    """A SimTrans row's first stage writes the weak-shot folder; a missing converted ResNet-50 (or
    Paddle's weights offline) must stop the run before that stage, in one line."""
    import paddle.utils.download as download
    ran = []
    from types import SimpleNamespace
    monkeypatch.setattr(repo.subprocess, "run", lambda *a, **k: ran.append(a) or SimpleNamespace(returncode=0))
    row = tmp_path / "row.yaml"
    row.write_text("row: r\ncommon: {data_path: '${WS}', model: ResNet50}\nstages:\n"
                   "  weakshot_data: {module: data.weakshot, args: [cub],\n"
                   "                  flags: {data_path: '${DATA}', out_dir: '${WS}'}}\n"
                   "  naive: {script: pretrain.py,\n"
                   "          flags: {method: simtrans_naive, imagenet_pretrained: '${IMAGENET_R50}'}}\n"
                   "  simnet: {script: pretrain.py, flags: {method: simtrans_simnet,\n"
                   "           similarity_pretrained: '{naive}/best_model.pdparams'}}\n")
    with pytest.raises(UserError, match="--imagenet_pretrained .*r50.* is not a file.*frn.convert"):
        repo.run(str(row))
    monkeypatch.setenv("IMAGENET_R50", "1")

    def offline(*_args, **_kwargs):
        raise RuntimeError("Download failed")
    monkeypatch.setattr(download, "get_weights_path_from_url", offline)
    with pytest.raises(UserError, match="cannot download Paddle's ImageNet ResNet-50"):
        repo.run(str(row))
    assert not ran, "no stage may run before the starting weights are there"
    (tmp_path / "r50.pdparams").write_bytes(b"")
    monkeypatch.setenv("IMAGENET_R50", str(tmp_path / "r50.pdparams"))
    repo.run(str(row))  # the SimNet's start is the naive stage's output: not checked up front
    assert len(ran) == 3
