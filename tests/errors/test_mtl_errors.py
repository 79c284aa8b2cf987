"""MTL's bad inputs: one line naming the culprit, exit code != 0, nothing on disk changed."""
import pytest

from tests.conftest import run_script, tiny_flags
from tests.errors.test_bad_input import assert_one_line_error, snapshot

MTL = ["--method", "mtl", "--widths", "4,8,16"]


def mtl_flags(data, checkpoints, *extra) -> list:
    """The e2e flags (tiny data, CPU, no workers) with MTL's encoder instead of Conv-4."""
    flags = tiny_flags(data, checkpoints, *extra)
    flags[flags.index("--model") + 1] = "ResNet25"
    return flags


@pytest.fixture(scope="module")
def mtl_runs(tiny_data, tmp_path_factory):
    """A pre-training run and a meta-training run whose files must survive every failed run."""
    ckpt = tmp_path_factory.mktemp("mtl_ckpt")
    flags = ["--method", "mtl", "--widths", "4,8,16", "--val_n_episode", "3"]
    result = run_script("pretrain.py", *mtl_flags(tiny_data, ckpt, *flags, "--epoch", "1", "--batch_size", "16"))
    assert result.returncode == 0, result.stderr
    pre = ckpt / "demo" / "ResNet25_mtl_pretrain" / "best_model.pdparams"
    result = run_script("meta_train.py", *mtl_flags(tiny_data, ckpt, *flags, "--epoch", "1", "--train_n_episode", "2",
                                                     "--update_step", "5", "--pretrain_path", pre))
    assert result.returncode == 0, result.stderr
    return ckpt


def failed_run(mtl_runs, script: str, *args: str):
    before = snapshot(mtl_runs)
    result = run_script(script, *args)
    assert snapshot(mtl_runs) == before
    return result


def pretrained(runs):
    return runs / "demo" / "ResNet25_mtl_pretrain" / "best_model.pdparams"


def meta_trained(runs):
    return runs / "demo" / "ResNet25_mtl_5way_1shot_metatrain" / "best_model.pdparams"


@pytest.mark.parametrize("script", ["pretrain.py", "meta_train.py", "test.py"])
def test_n_shot_beyond_the_images_of_a_class(mtl_runs, tiny_data, script):
    extra = {"pretrain.py": ["--epoch", "1", "--batch_size", "16"], "meta_train.py": ["--epoch", "1", "--update_step", "5"],
             "test.py": ["--model_path", meta_trained(mtl_runs), "--update_step", "5"]}[script]
    result = failed_run(mtl_runs, script, *mtl_flags(tiny_data, mtl_runs, *MTL, "--n_shot", "20", *extra))
    assert_one_line_error(result, "--n_shot 20", "only 12", "lower --n_shot")


def test_meta_test_of_a_pretraining_checkpoint(mtl_runs, tiny_data):
    result = failed_run(mtl_runs, "test.py", *mtl_flags(tiny_data, mtl_runs, *MTL, "--model_path", pretrained(mtl_runs)))
    assert_one_line_error(result, "--model_path", "pre-training checkpoint", "mtl_weight", "meta_train.py --pretrain_path")


def test_meta_test_with_other_encoder_widths(mtl_runs, tiny_data):
    flags = mtl_flags(tiny_data, mtl_runs, *MTL, "--model_path", meta_trained(mtl_runs))
    flags[flags.index("--widths") + 1] = "8,16,32"
    assert_one_line_error(failed_run(mtl_runs, "test.py", *flags), "--model_path", "does not fit", "shape")


def test_mtl_on_another_backbone(mtl_runs, tiny_data):
    result = failed_run(mtl_runs, "test.py", *mtl_flags(tiny_data, mtl_runs, *MTL, "--model_path",
                                                          meta_trained(mtl_runs), "--model", "ResNet12"))
    assert_one_line_error(result, "--model ResNet25", "ResNet12")


@pytest.mark.parametrize("flags, needle", [(["--ht_meta_batch", "-1"], "--ht_meta_batch"),
                                           (["--ht_hard_tasks", "0"], "--ht_hard_tasks"),
                                           (["--val_n_way", "3"], "--val_n_way 3"),
                                           (["--widths", "8,x,32"], "--widths")])
def test_bad_meta_training_flags(mtl_runs, tiny_data, flags, needle):
    result = failed_run(mtl_runs, "meta_train.py", *mtl_flags(tiny_data, mtl_runs, *MTL, "--epoch", "1", *flags))
    assert_one_line_error(result, needle)
