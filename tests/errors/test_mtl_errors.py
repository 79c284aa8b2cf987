"""MTL's bad inputs: one line naming the culprit, exit code != 0, nothing on disk changed."""
from types import SimpleNamespace

import pytest

from tests.conftest import run_script, tiny_mtl_flags
from tests.errors.test_bad_input import assert_one_line_error, snapshot



@pytest.fixture(scope="module")
def mtl_runs(tiny_data, tmp_path_factory):
    """A pre-training run and a meta-training run whose files must survive every failed run."""
    ckpt = tmp_path_factory.mktemp("mtl_ckpt")
    flags = ["--val_n_episode", "3"]
    result = run_script("pretrain.py", *tiny_mtl_flags(tiny_data, ckpt, *flags, "--epoch", "1", "--batch_size", "16"))
    assert result.returncode == 0, result.stderr
    pre = ckpt / "demo" / "ResNet25_mtl_pretrain" / "best_model.pdparams"
    result = run_script("meta_train.py", *tiny_mtl_flags(tiny_data, ckpt, *flags, "--epoch", "1", "--train_n_episode", "2",
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
    result = failed_run(mtl_runs, script, *tiny_mtl_flags(tiny_data, mtl_runs, "--n_shot", "20", *extra))
    assert_one_line_error(result, "--n_shot 20", "only 12", "lower --n_shot")


def test_meta_test_of_a_pretraining_checkpoint(mtl_runs, tiny_data):
    result = failed_run(mtl_runs, "test.py", *tiny_mtl_flags(tiny_data, mtl_runs, "--model_path", pretrained(mtl_runs)))
    assert_one_line_error(result, "--model_path", "pre-training checkpoint", "mtl_weight", "meta_train.py --pretrain_path")


def test_meta_test_with_other_encoder_widths(mtl_runs, tiny_data):
    flags = tiny_mtl_flags(tiny_data, mtl_runs, "--model_path", meta_trained(mtl_runs))
    flags[flags.index("--widths") + 1] = "8,16,32"
    assert_one_line_error(failed_run(mtl_runs, "test.py", *flags), "--model_path", "does not fit", "shape")


def in_process(entry_main, argv, capsys) -> SimpleNamespace:
    """An entry script's main() called here (flag errors stop before any heavy work), as a
    finished process: return code and stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        entry_main([str(a) for a in argv])
    return SimpleNamespace(returncode=stop.value.code, stderr=capsys.readouterr().err)


def test_mtl_on_another_backbone(mtl_runs, tiny_data, capsys):
    import test as test_entry
    before = snapshot(mtl_runs)
    result = in_process(test_entry.main, tiny_mtl_flags(tiny_data, mtl_runs, "--model_path", meta_trained(mtl_runs),
                                                        "--model", "ResNet12"), capsys)
    assert_one_line_error(result, "--model ResNet25", "ResNet12")
    assert snapshot(mtl_runs) == before


@pytest.mark.parametrize("flags, needle", [(["--ht_meta_batch", "-1"], "--ht_meta_batch"),
                                           (["--ht_hard_tasks", "0"], "--ht_hard_tasks"),
                                           (["--val_n_way", "3"], "--val_n_way 3"),
                                           (["--widths", "8,x,32"], "--widths"),
                                           (["--update_step", "0"], "--update_step")])
def test_bad_meta_training_flags(mtl_runs, tiny_data, capsys, flags, needle):
    import meta_train
    before = snapshot(mtl_runs)
    result = in_process(meta_train.main, tiny_mtl_flags(tiny_data, mtl_runs, "--epoch", "1", *flags), capsys)
    assert_one_line_error(result, needle)
    assert snapshot(mtl_runs) == before
