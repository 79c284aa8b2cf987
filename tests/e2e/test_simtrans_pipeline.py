"""The SimTrans pipeline through the entry points on a tiny weak-shot benchmark (the session
fixture `simtrans_run` of tests/conftest.py runs steps 0-3 and the evaluation once)."""
import json
import re

import numpy as np
import paddle

from data.weakshot import fingerprint, injected_files, load_weakshot
from utils.stats import roc_auc
from data.similarity_folder import read_similarity
from frn.weakshot import web_sample_weights
from tests.conftest import run_script, simtrans_flags

RUN_FILES = ("best_model.pdparams", "last_model.pdparams", "resume.pdstate", "output.log", "history.json", "curves.png")


def test_every_training_step_writes_a_run_folder(simtrans_run):
    runs = simtrans_run["runs"]
    for name, epochs in (("Conv4_simtrans_naive", 2), ("Conv4_simtrans_simnet_h4_b0.1", 2),
                         ("Conv4_simtrans_main_savg1", 2), ("Conv4_simtrans_alternate_GCN_a0.1_avg1", 3)):
        for file in RUN_FILES:
            assert (runs / name / file).is_file(), (name, file)
        history = json.loads((runs / name / "history.json").read_text())
        assert [h["epoch"] for h in history] == list(range(epochs))
        assert all(h["val_acc"] is not None for h in history)
        identity = paddle.load(str(runs / name / "best_model.pdparams"))["identity"]
        assert identity["weakshot"] == fingerprint(str(simtrans_run["bench"])) and identity["model"] == "Conv4"
    simnet_history = json.loads((simtrans_run["simnet"] / "history.json").read_text())
    assert all("base_f1" in h for h in simnet_history)
    naive = json.loads((runs / "Conv4_simtrans_naive" / "history.json").read_text())
    assert [round(h["lr"], 6) for h in naive] == [0.02, 0.01]  # --lr_interval 1 --lr_decay 0.5


def test_step_two_writes_the_matrices_and_scores_the_denoising(simtrans_run):
    bench, out = simtrans_run["bench"], simtrans_run["out"]["weights"]
    weakshot = load_weakshot(str(bench))
    matrices = read_similarity(str(simtrans_run["simnet"] / "similarity"), weakshot)
    sizes = np.bincount(weakshot.web["image_labels"])
    assert [m.shape for m in matrices] == [(n, n) for n in sizes]
    assert all(((m >= 0) & (m <= 1)).all() for m in matrices)
    assert re.search(r"^\d+ novel test images: pair F1 = [\d.]+%$", out, re.M), out
    printed = dict(re.findall(r"ROC-AUC of the (\w+) weights .*: ([\d.]+)$", out, re.M))
    injected = injected_files(str(bench))
    clean = np.array([name not in injected for name in weakshot.web["file_names"]])
    for weight_type, value in printed.items():
        weights = web_sample_weights(weakshot, matrices, weight_type, "one_mean")
        assert abs(roc_auc(weights, clean) - float(value)) < 1e-3
    assert set(printed) == {"savg1", "avg1"}


def test_sample_weights_reach_the_batches(simtrans_run):
    from frn.args import parse, pretrain_parser
    from frn.weakshot import classifier_data, need_weakshot
    args = parse(pretrain_parser(), [str(a) for a in simtrans_flags(
        simtrans_run["bench"], simtrans_run["checkpoints"], "--method", "simtrans_main",
        "--load_dir", simtrans_run["simnet"] / "similarity")])
    dataset, batches, _ = classifier_data(args, need_weakshot(args))
    labels = np.asarray(dataset.labels)
    for label in np.unique(labels):
        assert abs(dataset.weights[labels == label].mean() - 1.0) < 1e-5  # one_mean per class
    image, label, weight = dataset[3]
    assert weight == dataset.weights[3] and label == labels[3]
    assert sum(len(b) for b in batches(0)) == len(labels)  # the last, partial batch is kept


def test_evaluation_prints_the_accuracy_line(simtrans_run):
    out = simtrans_run["out"]["eval"]
    n_test = len(json.loads((simtrans_run["bench"] / "novel.json").read_text())["image_names"])
    assert re.search(rf"^{n_test} Test Acc = [\d.]+% \+- [\d.]+%$", out, re.M), out


def test_a_simtrans_run_resumes(simtrans_run, tmp_path):
    """Both runs in processes of their own, as a user runs them: Paddle names the optimizer state
    after the parameters' creation order, which differs inside this test session."""
    flags = simtrans_flags(simtrans_run["bench"], tmp_path, "--method", "simtrans_naive", "--batch_size", "8",
                           "--lr", "0.02", "--lr_interval", "1")
    run = tmp_path / "demo" / "bench" / "Conv4_simtrans_naive"
    first = run_script("pretrain.py", *flags, "--num_epoch", "1")
    assert first.returncode == 0, first.stderr
    resumed = run_script("pretrain.py", *flags, "--num_epoch", "2", "--resume", run)
    assert resumed.returncode == 0, resumed.stderr
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1] and round(history[1]["lr"], 6) == 0.01
    assert "resuming at epoch 1" in (run / "output.log").read_text()


def test_exp_type_clean_base_trains_on_the_base_images(simtrans_run):
    from frn.args import parse, pretrain_parser
    from frn.weakshot import classifier_data, need_weakshot
    args = parse(pretrain_parser(), [str(a) for a in simtrans_flags(
        simtrans_run["bench"], simtrans_run["checkpoints"], "--method", "simtrans_naive", "--exp_type", "CleanBase")])
    dataset, _, num_classes = classifier_data(args, need_weakshot(args))
    base = json.loads((simtrans_run["bench"] / "base.json").read_text())
    assert num_classes == len(base["label_names"]) and len(dataset) == len(base["image_names"])
    assert args.options.splits() == ("base", "base_test") and args.options.run_name() == "simtrans_naive_CleanBase"
