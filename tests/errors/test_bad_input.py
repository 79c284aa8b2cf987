"""Bad input stops with one line naming the culprit, exit code != 0, and nothing on disk changes."""
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_script, tiny_flags


def snapshot(folder: Path) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_line_error(result, *needles: str):
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr  # one line, no traceback
    assert lines[0].startswith("error:"), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture(scope="module")
def previous_run(tiny_data, tmp_path_factory):
    """A finished run whose files must survive every failed run below."""
    ckpt = tmp_path_factory.mktemp("ckpt")
    result = run_script("pretrain.py", *tiny_flags(tiny_data, ckpt, "--method", "stl_frn", "--epoch", "1",
                                                   "--batch_size", "16", "--val_n_episode", "5"))
    assert result.returncode == 0, result.stderr
    return ckpt


@pytest.fixture
def copy_of(tiny_data, tmp_path):
    """A private copy of the tiny dataset that a test may damage."""
    def make() -> Path:
        target = tmp_path / "data"
        shutil.copytree(tiny_data, target)
        for name in ("base.json", "val.json", "novel.json"):  # point the filelists at the copy
            path = target / name
            path.write_text(path.read_text().replace(str(tiny_data), str(target)))
        return target
    return make


PRETRAIN = ["--method", "stl_frn", "--epoch", "1", "--batch_size", "16", "--val_n_episode", "5"]


def check_untouched(previous_run, result, *needles):
    before = snapshot(previous_run)
    assert_one_line_error(result, *needles)
    assert snapshot(previous_run) == before


def test_missing_data_path(previous_run, tmp_path):
    result = run_script("pretrain.py", *tiny_flags(tmp_path / "nowhere", previous_run, *PRETRAIN))
    check_untouched(previous_run, result, "--data_path", "nowhere")


def test_data_path_without_filelists(previous_run, tmp_path):
    result = run_script("pretrain.py", *tiny_flags(tmp_path, previous_run, *PRETRAIN))
    check_untouched(previous_run, result, "base.json", "write_miniImagenet_filelist.py")


def test_csv_with_wrong_header(copy_of):
    data = copy_of()
    csv = data / "train.csv"
    csv.write_text("file,class\n" + "\n".join(csv.read_text().splitlines()[1:]) + "\n")
    before = snapshot(data)
    result = run_script("write_miniImagenet_filelist.py", "--data_path", data)
    assert_one_line_error(result, "train.csv", "filename,label")
    assert snapshot(data) == before


def test_missing_image(previous_run, copy_of):
    data = copy_of()
    victim = json.loads((data / "base.json").read_text())["image_names"][3]
    Path(victim).unlink()
    result = run_script("pretrain.py", *tiny_flags(data, previous_run, *PRETRAIN))
    check_untouched(previous_run, result, Path(victim).name, "missing")


@pytest.mark.parametrize("workers", ["0", "2"])
def test_corrupt_image(previous_run, copy_of, workers):
    data = copy_of()
    victim = json.loads((data / "val.json").read_text())["image_names"][0]
    Path(victim).write_bytes(b"this is not a picture")
    flags = tiny_flags(data, previous_run, *PRETRAIN)
    flags[flags.index("--num_workers") + 1] = workers
    result = run_script("pretrain.py", *flags)
    assert_one_line_error(result, Path(victim).name, "corrupt")


def test_shot_plus_query_beyond_class_size(previous_run, tiny_data):
    result = run_script("pretrain.py", *tiny_flags(tiny_data, previous_run, *PRETRAIN, "--n_shot", "5",
                                                   "--n_query", "10"))
    check_untouched(previous_run, result, "--n_shot", "--n_query")


def test_train_way_beyond_class_count(previous_run, tiny_data):
    result = run_script("meta_train.py", *tiny_flags(tiny_data, previous_run, "--train_n_way", "20",
                                                     "--n_shot", "1", "--n_query", "2", "--epoch", "1"))
    check_untouched(previous_run, result, "20-way", "8")


def test_model_path_of_another_backbone(previous_run, tiny_data):
    ckpt = previous_run / "demo" / "Conv4_stl_frn_pretrain" / "best_model.pdparams"
    flags = tiny_flags(tiny_data, previous_run, "--model_path", ckpt)
    flags[flags.index("--model") + 1] = "ResNet12"
    check_untouched(previous_run, run_script("test.py", *flags), "--model_path", "Conv4", "ResNet12")


def test_model_path_of_another_method(previous_run, tiny_data):
    ckpt = previous_run / "demo" / "Conv4_stl_frn_pretrain" / "best_model.pdparams"
    result = run_script("test.py", *tiny_flags(tiny_data, previous_run, "--method", "protonet", "--model_path", ckpt))
    check_untouched(previous_run, result, "--model_path", "FRN", "ProtoNet")


def test_unknown_method(previous_run, tiny_data):
    result = run_script("pretrain.py", *tiny_flags(tiny_data, previous_run, "--method", "magic"))
    check_untouched(previous_run, result, "--method", "magic")


@pytest.mark.parametrize("content", ["{not json", json.dumps({"way": 5}),
                                     json.dumps({"way": 2, "shot": 1, "query": 1,
                                                 "episodes": [{"classes": ["a", "b"], "support": [["x.png"], ["y.png"]],
                                                               "query": [["z.png"], ["w.png"]]}]})])
def test_malformed_episodes_file(previous_run, tiny_data, tmp_path, content):
    ckpt = previous_run / "demo" / "Conv4_stl_frn_pretrain" / "best_model.pdparams"
    episodes = tmp_path / "episodes.json"
    episodes.write_text(content)
    result = run_script("test.py", *tiny_flags(tiny_data, previous_run, "--model_path", ckpt,
                                               "--episodes_file", episodes))
    check_untouched(previous_run, result, "--episodes_file")


def test_zero_shot(previous_run, tiny_data):
    result = run_script("test.py", *tiny_flags(tiny_data, previous_run, "--n_shot", "0"))
    check_untouched(previous_run, result, "--n_shot")


def test_num_classes_below_the_base_classes(previous_run, tiny_data):
    result = run_script("pretrain.py", *tiny_flags(tiny_data, previous_run, *PRETRAIN, "--num_classes", "3"))
    check_untouched(previous_run, result, "--num_classes 3", "8")


def test_batch_larger_than_the_base_split(previous_run, tiny_data):
    result = run_script("pretrain.py", *tiny_flags(tiny_data, previous_run, *PRETRAIN, "--batch_size", "500"))
    check_untouched(previous_run, result, "--batch_size 500")


def test_resume_from_a_model_file_instead_of_a_resume_state(previous_run, tiny_data):
    model = previous_run / "demo" / "Conv4_stl_frn_pretrain" / "best_model.pdparams"
    result = run_script("pretrain.py", *tiny_flags(tiny_data, previous_run, *PRETRAIN, "--resume", model))
    check_untouched(previous_run, result, "--resume", "resume.pdstate")


# ----- DeepEMD's own flags --------------------------------------------------------------------
@pytest.mark.parametrize("flags,needles", [
    (["-patch_list", "2,x"], ["-patch_list", "2,x"]),
    (["-patch_list", "0,3"], ["-patch_list"]),
    (["-feature_pyramid", "two"], ["-feature_pyramid"]),
    (["-num_patch", "0"], ["-num_patch"]),
    (["-form", "QQ"], ["-form", "QQ"]),
    (["-solver", "gurobi"], ["-solver", "gurobi"]),
    (["-eval_solver", "qpth"], ["-eval_solver"]),
    (["-qp_iterations", "0"], ["-qp_iterations"]),
    (["-qp_mode", "exact"], ["-qp_mode", "exact"]),
])
def test_deepemd_bad_flag(previous_run, tiny_data, flags, needles):
    result = run_script("meta_train.py", *tiny_flags(tiny_data, previous_run, "--method", "deepemd", *flags,
                                                     "--epoch", "1"))
    check_untouched(previous_run, result, *needles)


def test_deepemd_checkpoint_of_another_backbone(previous_run, tiny_data):
    ckpt = previous_run / "demo" / "Conv4_stl_frn_pretrain" / "best_model.pdparams"
    flags = tiny_flags(tiny_data, previous_run, "--method", "deepemd", "--model_path", ckpt)
    flags[flags.index("--model") + 1] = "ResNet12"
    result = run_script("test.py", *flags)
    check_untouched(previous_run, result, "--model_path", "Conv4", "ResNet12")


# ----- Negative-Margin ------------------------------------------------------------------------
NEG_MARGIN = ["--method", "neg_margin", "--epoch", "1", "--batch_size", "16", "--val_n_episode", "5"]


@pytest.mark.parametrize("flags,needles", [
    (["--margin", "0.1"], ["--margin 0.1", "positive", "--protocol bl0"]),          # mmfewshot asserts m <= 0
    (["--metric", "cosine", "--margin", "-0.1"], ["--margin", "--metric cosine"]),
    (["--finetune_steps", "0"], ["--finetune_steps"]),
])
def test_neg_margin_bad_flag(previous_run, tiny_data, flags, needles):
    result = run_script("pretrain.py", *tiny_flags(tiny_data, previous_run, *NEG_MARGIN, *flags))
    check_untouched(previous_run, result, *needles)


def test_neg_margin_has_no_episodic_training(previous_run, tiny_data):
    result = run_script("meta_train.py", *tiny_flags(tiny_data, previous_run, "--method", "neg_margin", "--epoch", "1"))
    check_untouched(previous_run, result, "--method neg_margin", "pretrain.py")


@pytest.mark.parametrize("script", ["pretrain.py", "test.py"])
def test_neg_margin_shot_beyond_the_images_of_a_class(previous_run, tiny_data, tmp_path, script):
    """12 images per class: 20-shot validation or test episodes cannot be drawn."""
    extra = NEG_MARGIN
    if script == "test.py":
        from frn.args import parse, test_parser
        from frn.checkpoint import save_model
        from frn.runs import build_model
        model = tmp_path / "neg_margin.pdparams"
        save_model(build_model(parse(test_parser(), tiny_flags(tiny_data, previous_run, "--method", "neg_margin")).options),
                   str(model))
        extra = ["--method", "neg_margin", "--model_path", model]
    result = run_script(script, *tiny_flags(tiny_data, previous_run, *extra, "--n_shot", "20"))
    check_untouched(previous_run, result, "--n_shot 20", "lower --n_shot")
