"""MTL's bad inputs: one line naming the culprit, exit code != 0, nothing on disk changed."""
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import run_entry, run_script, tiny_mtl_flags
from tests.errors.test_bad_input import assert_one_line_error, snapshot


@pytest.fixture
def mtl_runs(mtl_run) -> Path:
    """The checkpoint folder of the shared MTL runs, whose files must survive every failed run."""
    return mtl_run["checkpoints"]


def failed_run(mtl_runs, script: str, *args: str):
    before = snapshot(mtl_runs)
    result = run_script(script, *args)
    assert snapshot(mtl_runs) == before
    return result


def failed_in_process(mtl_runs, script: str, argv) -> SimpleNamespace:
    """`script`'s main(argv) run here (flag errors stop before any heavy work) as a finished
    process (return code, stderr); the checkpoint folder must be left as it was."""
    before = snapshot(mtl_runs)
    code, _, err = run_entry(script, argv)
    assert snapshot(mtl_runs) == before
    return SimpleNamespace(returncode=code, stderr=err)


def pretrained(runs):
    return runs / "demo" / "ResNet25_mtl_pretrain" / "best_model.pdparams"


def meta_trained(runs):
    return runs / "demo" / "ResNet25_mtl_ht2_5way_1shot_metatrain" / "best_model.pdparams"


@pytest.mark.parametrize("script", ["pretrain.py", "meta_train.py", "test.py"])
def test_n_shot_beyond_the_images_of_a_class(mtl_runs, tiny_data, script):
    extra = {"pretrain.py": ["--epoch", "1", "--batch_size", "16"], "meta_train.py": ["--epoch", "1", "--update_step", "5"],
             "test.py": ["--model_path", meta_trained(mtl_runs), "--update_step", "5"]}[script]
    result = failed_run(mtl_runs, script, *tiny_mtl_flags(tiny_data, mtl_runs, "--n_shot", "20", *extra))
    assert_one_line_error(result, "--n_shot 20", "only 12", "lower --n_shot")


def test_meta_test_of_a_pretraining_checkpoint(mtl_runs, tiny_data):
    result = failed_run(mtl_runs, "test.py", *tiny_mtl_flags(tiny_data, mtl_runs, "--model_path", pretrained(mtl_runs)))
    assert_one_line_error(result, "--model_path", "pre-training checkpoint", "mtl_weight", "meta_train.py --pretrain_path")


def test_meta_test_with_other_encoder_widths(mtl_runs, tiny_data):
    flags = tiny_mtl_flags(tiny_data, mtl_runs, "--model_path", meta_trained(mtl_runs))
    flags[flags.index("--widths") + 1] = "8,16,32"
    assert_one_line_error(failed_run(mtl_runs, "test.py", *flags), "--model_path", "does not fit", "shape")


def test_mtl_on_another_backbone(mtl_runs, tiny_data):
    result = failed_in_process(mtl_runs, "test.py", tiny_mtl_flags(tiny_data, mtl_runs, "--model_path",
                                                                   meta_trained(mtl_runs), "--model", "ResNet12"))
    assert_one_line_error(result, "--model ResNet25", "ResNet12")


@pytest.mark.parametrize("flags, needle", [(["--ht_meta_batch", "-1"], "--ht_meta_batch"),
                                           (["--ht_hard_tasks", "0"], "--ht_hard_tasks"),
                                           (["--val_n_way", "3"], "--val_n_way 3"),
                                           (["--widths", "8,x,32"], "--widths"),
                                           (["--update_step", "0"], "--update_step")])
def test_bad_meta_training_flags(mtl_runs, tiny_data, flags, needle):
    result = failed_in_process(mtl_runs, "meta_train.py", tiny_mtl_flags(tiny_data, mtl_runs, "--epoch", "1", *flags))
    assert_one_line_error(result, needle)
