"""DeepEMD through the three entry points on the tiny demo data (Conv-4, 32x32: 2x2 maps, so
4 FCN nodes): pre-training, meta-training with each training solver, 1-shot and 5-shot (SFC)
tests with each evaluation solver, and the Grid and Sampling variants."""
import pytest

from tests.conftest import run_script, tiny_flags
from tests.e2e.test_pipeline import acc_line

EMD = ("--method", "deepemd")
SHORT_SFC = ("-sfc_update_step", "3")


@pytest.fixture(scope="module")
def pretrained(tiny_data, tmp_path_factory):
    """DeepEMD's whole-class pre-training, validated by DeepEMD-FCN episodes."""
    ckpt = tmp_path_factory.mktemp("emd")
    result = run_script("pretrain.py", *tiny_flags(tiny_data, ckpt, *EMD, "--epoch", "1", "--batch_size", "16",
                                                   "--lr", "0.05", "--val_n_episode", "10"))
    assert result.returncode == 0, result.stderr
    return ckpt, ckpt / "demo" / "Conv4_deepemd_fcn_pretrain" / "best_model.pdparams"


@pytest.mark.parametrize("solver,extra", [("opencv", ()), ("exact", ()), ("qpth", ()),
                                          ("qpth", ("-qp_mode", "converged"))])
def test_meta_training_with_each_solver(tiny_data, pretrained, solver, extra):
    ckpt, pre = pretrained
    result = run_script("meta_train.py", *tiny_flags(
        tiny_data, ckpt, *EMD, "-solver", solver, *extra, "-way", "5", "-shot", "1", "-query", "2", "--epoch", "1",
        "--train_n_episode", "2", "--val_n_episode", "5", "--lr", "5e-4", "--pretrain_path", pre))
    assert result.returncode == 0, result.stderr
    suffix = ("" if solver == "opencv" else f"_{solver}") + "".join(f"_{value}" for value in extra[1::2])
    run = ckpt / "demo" / f"Conv4_deepemd_fcn{suffix}_5way_1shot_metatrain"
    assert (run / "best_model.pdparams").is_file() and (run / "output.log").is_file()


@pytest.mark.parametrize("shot", ["1", "5"])
def test_exact_and_opencv_evaluation_agree(tiny_data, pretrained, shot):
    """The default evaluation solver (exact) and the reference's (OpenCV) give the same test
    accuracy on the same episodes, SFC included; so do episodes scored in groups from the
    feature cache and one by one from the images (the SFC's random orders are drawn per episode)."""
    ckpt, pre = pretrained
    lines = []
    for flags in (["-eval_solver", "exact"], ["-eval_solver", "opencv"], ["--no_feature_cache"]):
        result = run_script("test.py", *tiny_flags(tiny_data, ckpt, *EMD, *flags, "-shot", shot, "-test_episode", "8",
                                                   *SHORT_SFC, "--model_path", pre))
        assert result.returncode == 0, result.stderr
        lines.append(acc_line(result.stdout))
    assert lines[0] == lines[1] == lines[2]
    assert lines[0][0] == 8


@pytest.mark.parametrize("variant,flags", [("grid", ("-patch_list", "1,2")), ("sampling", ("-num_patch", "3"))])
def test_grid_and_sampling_variants(tiny_data, pretrained, variant, flags):
    """Patch variants reuse the FCN-pretrained encoder; Sampling draws new crops at test time,
    so evaluation reads images per episode (no feature cache)."""
    ckpt, pre = pretrained
    train = run_script("meta_train.py", *tiny_flags(
        tiny_data, ckpt, *EMD, "-deepemd", variant, *flags, "-way", "5", "-shot", "1", "-query", "2",
        "--epoch", "1", "--train_n_episode", "1", "--val_n_episode", "3", "--pretrain_path", pre))
    assert train.returncode == 0, train.stderr
    run = ckpt / "demo" / f"Conv4_deepemd_{variant}_5way_1shot_metatrain"
    test = run_script("test.py", *tiny_flags(tiny_data, ckpt, *EMD, "-deepemd", variant, *flags, "-shot", "1",
                                             "-test_episode", "4", "--model_path", run / "best_model.pdparams"))
    assert test.returncode == 0, test.stderr
    assert acc_line(test.stdout)[0] == 4
