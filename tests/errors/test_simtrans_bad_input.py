"""SimTrans bad input: one line naming the culprit, a non-zero exit, nothing written. Each step
refuses outputs of a missing step, of another step or of another weak-shot dataset."""
import json
import shutil

import pytest

from tests.conftest import run_entry, simtrans_flags
from tests.data.test_weakshot import shrink_class
from tests.errors.test_bad_input import snapshot


def assert_refused(run: dict, script: str, data, *extra, needles=()):
    before = snapshot(run["checkpoints"])
    code, _, err = run_entry(script, simtrans_flags(data, run["checkpoints"], *extra))
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error:"), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert snapshot(run["checkpoints"]) == before


def best(run: dict, name: str):
    return run["runs"] / name / "best_model.pdparams"


def test_similarity_folder_of_another_dataset(simtrans_run):
    assert_refused(simtrans_run, "pretrain.py", simtrans_run["other"], "--method", "simtrans_main",
                   "--load_dir", simtrans_run["simnet"] / "similarity", needles=("--load_dir", "another weak-shot"))


def test_step_zero_model_of_another_dataset(simtrans_run):
    assert_refused(simtrans_run, "pretrain.py", simtrans_run["other"], "--method", "simtrans_simnet",
                   "--batch_size", "8", "--similarity_pretrained", best(simtrans_run, "Conv4_simtrans_naive"),
                   needles=("--similarity_pretrained", "another weak-shot"))


def test_evaluating_on_another_dataset(simtrans_run):
    assert_refused(simtrans_run, "test.py", simtrans_run["other"], "--method", "simtrans_main",
                   "--model_path", best(simtrans_run, "Conv4_simtrans_main_savg1"), needles=("--model_path", "another"))


@pytest.mark.parametrize("extra,needles", [
    (["--method", "simtrans_main", "--load_dir", "/nowhere"], ("--load_dir", "/nowhere", "similarity")),
    (["--method", "simtrans_simnet", "--batch_size", "8"], ("--similarity_pretrained", "required")),
    (["--method", "simtrans_alternate", "--load_dir", "SIM", "--pretrain_path", "MAIN"], ("--similarity_net",)),
    (["--method", "simtrans_alternate", "--load_dir", "SIM", "--similarity_net", "SIMNET"], ("--pretrain_path",)),
    (["--method", "simtrans_alternate", "--load_dir", "SIM", "--similarity_net", "SIMNET", "--pretrain_path",
      "/no/main.pdparams"], ("--pretrain_path", "does not exist")),
    (["--method", "simtrans_simnet", "--noisy_frac", "1", "--similarity_pretrained", "none"],
     ("--noisy_frac", "[0, 1)")),
    (["--method", "simtrans_simnet", "--noisy_frac", "-0.1", "--similarity_pretrained", "none"], ("--noisy_frac",)),
    (["--method", "simtrans_simnet", "--batch_size", "8", "--source_set", "noisy_base", "--similarity_pretrained",
      "none"], ("base_web.json", "web images of the base classes")),
])
def test_missing_or_unsupported_inputs_of_a_step(simtrans_run, extra, needles):
    names = {"SIM": simtrans_run["simnet"] / "similarity",
             "SIMNET": best(simtrans_run, "Conv4_simtrans_simnet_h4_b0.1"),
             "MAIN": best(simtrans_run, "Conv4_simtrans_main_savg1")}
    extra = [names.get(a, a) for a in extra]
    assert_refused(simtrans_run, "pretrain.py", simtrans_run["bench"], *extra, needles=needles)


def test_step_two_with_a_classifier_instead_of_a_simnet(simtrans_run):
    assert_refused(simtrans_run, "test.py", simtrans_run["bench"], "--method", "simtrans_simnet",
                   "--similarity_net", best(simtrans_run, "Conv4_simtrans_naive"),
                   needles=("SimNet", "SimTransClassifier"))


def test_a_folder_that_is_not_weak_shot(simtrans_run, tiny_data):
    assert_refused(simtrans_run, "pretrain.py", tiny_data, "--method", "simtrans_naive",
                   needles=("web.json", "data.weakshot"))


@pytest.mark.parametrize("keep,needle", [(0, "no web images"), (1, "only 1 web image")])
@pytest.mark.parametrize("step", ["naive", "weights"])
def test_a_novel_class_without_pairs(simtrans_run, tmp_path, keep, needle, step):
    data = tmp_path / "ws"
    shutil.copytree(simtrans_run["bench"], data)
    shrink_class(data, 1, keep)
    name = json.loads((data / "web.json").read_text())["label_names"][1]
    if step == "naive":
        assert_refused(simtrans_run, "pretrain.py", data, "--method", "simtrans_naive", needles=(needle, name))
    else:
        assert_refused(simtrans_run, "test.py", data, "--method", "simtrans_simnet", "--similarity_net",
                       best(simtrans_run, "Conv4_simtrans_simnet_h4_b0.1"), needles=(needle, name))


def test_weakshot_builder_bad_fraction(tiny_data, tmp_path):
    code, _, err = run_entry("data/weakshot.py", ["inject", "--data_path", tiny_data, "--out_dir", tmp_path / "x",
                                                  "--outlier_fraction", "1.2"])
    assert code == 2 and err.startswith("error:") and "--outlier_fraction" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()



def test_a_new_run_into_a_finished_step_is_refused(simtrans_run):
    """The run-folder rule holds for the weak-shot workflow too: step 0 again, same flags."""
    assert_refused(simtrans_run, "pretrain.py", simtrans_run["bench"], "--method", "simtrans_naive", "--num_epoch",
                   "2", "--batch_size", "8", "--lr", "0.02", "--lr_interval", "1", "--lr_decay", "0.5", "--backbone",
                   "conv4", needles=("Conv4_simtrans_naive", "--resume", "--overwrite"))


def test_a_missing_converted_imagenet_start_is_refused_before_anything_is_written(simtrans_run, tmp_path):
    """The rows start from torchvision's ImageNet ResNet-50 converted to a file: a wrong path stops
    the step in one line that says how to make the file."""
    assert_refused(simtrans_run, "pretrain.py", simtrans_run["bench"], "--method", "simtrans_naive",
                   "--imagenet_pretrained", tmp_path / "r50.pdparams", needles=("--imagenet_pretrained", "frn.convert"))


def test_paddles_imagenet_weights_offline_are_refused_before_the_run_folder(simtrans_run, monkeypatch):
    """Paddle's weights are downloaded before the run folder is created: offline, one line and no
    folder (the run folder of this step would be <checkpoints>/demo/ResNet50_simtrans_naive)."""
    import paddle.utils.download as download

    def offline(*_args, **_kwargs):
        raise RuntimeError("Download from https://example failed. Retry limit reached")
    monkeypatch.setattr(download, "get_weights_path_from_url", offline)
    assert_refused(simtrans_run, "pretrain.py", simtrans_run["bench"], "--method", "simtrans_naive", "--model",
                   "ResNet50", "--imagenet_pretrained", "1", needles=("cannot download", "--imagenet_pretrained"))
    assert not (simtrans_run["runs"] / "ResNet50_simtrans_naive").exists()
