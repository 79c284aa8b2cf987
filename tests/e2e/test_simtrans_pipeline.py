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
    run = tmp_path / "demo" / "Conv4_simtrans_naive"
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
    assert args.options.splits() == (("base",), ("base_test",))
    assert args.options.run_name() == "simtrans_naive_CleanBase"


def parsed(simtrans_run, script_parser, *extra):
    from frn.args import parse
    return parse(script_parser(), [str(a) for a in simtrans_flags(simtrans_run["bench"], simtrans_run["checkpoints"],
                                                                  *extra)])


def test_exp_type_clean_all_trains_the_clean_oracle_on_base_and_novel(simtrans_run, tmp_path):
    """The reference's CleanAll: one classifier over base then novel classes, trained on every clean
    training image (base.json + novel_train.json, the novel images before any was replaced by an
    outlier) and tested on both test sets; the novel images' accuracy is reported apart."""
    from frn.args import pretrain_parser
    from frn.weakshot import classifier_data, need_weakshot
    bench = simtrans_run["bench"]
    lists = {name: json.loads((bench / f"{name}.json").read_text())
             for name in ("base", "novel_train", "base_test", "novel", "web")}
    clean = {(f, lists["novel_train"]["label_names"][y])
             for f, y in zip(lists["novel_train"]["file_names"], lists["novel_train"]["image_labels"])}
    records = injected_files(str(bench)).values()
    assert records and not {(r["file"], r["class"]) for r in records} & clean  # no outlier under its wrong class
    assert {(r["file"], r["true_class"]) for r in records if r["source"] == "novel"} <= clean
    args = parsed(simtrans_run, pretrain_parser, "--method", "simtrans_naive", "--exp_type", "CleanAll")
    dataset, _, num_classes = classifier_data(args, need_weakshot(args))
    n_base = len(lists["base"]["label_names"])
    assert num_classes == n_base + len(lists["novel"]["label_names"])
    assert len(dataset) == len(lists["base"]["image_names"]) + len(lists["novel_train"]["image_names"])
    shifted = [n_base + y for y in lists["novel_train"]["image_labels"]]
    assert dataset.labels.tolist() == lists["base"]["image_labels"] + shifted
    assert dataset.file_names[-1] == lists["novel_train"]["file_names"][-1]
    assert args.options.run_name() == "simtrans_naive_CleanAll"
    run = run_script("pretrain.py", *simtrans_flags(bench, tmp_path, "--method", "simtrans_naive", "--exp_type",
                                                    "CleanAll", "--num_epoch", "1", "--batch_size", "8"))
    assert run.returncode == 0, run.stderr
    folder = tmp_path / "demo" / "Conv4_simtrans_naive_CleanAll"
    history = json.loads((folder / "history.json").read_text())
    assert 0 <= history[0]["novel_acc"] <= 100
    tested = run_script("test.py", *simtrans_flags(bench, tmp_path, "--method", "simtrans_naive", "--exp_type",
                                                   "CleanAll", "--model_path", folder / "best_model.pdparams"))
    assert tested.returncode == 0, tested.stderr
    total = len(lists["base_test"]["image_names"]) + len(lists["novel"]["image_names"])
    assert f"{total} Test Acc = " in tested.stdout and "novel classes' test images:" in tested.stdout


def test_source_set_picks_the_images_whose_pairs_train_the_similarity(simtrans_run):
    from frn.args import pretrain_parser
    from frn.weakshot import simnet_data
    bench = simtrans_run["bench"]
    sizes = {name: len(json.loads((bench / f"{name}.json").read_text())["image_names"])
             for name in ("base", "web", "novel_train")}
    for source, split in (("clean_base", "base"), ("noisy_novel", "web"), ("clean_novel", "novel_train")):
        args = parsed(simtrans_run, pretrain_parser, "--method", "simtrans_simnet", "--batch_size", "8",
                      "--source_set", source, "--similarity_pretrained", "none")
        dataset, batches, classes = simnet_data(args)
        assert len(dataset) == sizes[split] + sizes["web"], source  # [A images, B (web) images]
        first = batches(0)[0]
        assert max(first[:8]) < sizes[split] <= min(first[8:]), source  # A side, then B side
        expected = "" if source == "clean_base" else f"_{source}"
        assert args.options.run_name() == f"simtrans_simnet_h2_b0{expected}"


def test_noisy_frac_fuses_batches_of_distinct_novel_classes(simtrans_run):
    """--noisy_frac F adds int(F x n) DiffPairSet batches of web images (one image of each of distinct
    novel classes: every pair dissimilar but the self-pairs) to the A and to the B batches; F = 0
    draws nothing more: the plain method's batches."""
    from frn.args import pretrain_parser
    from frn.weakshot import simnet_data
    plain = parsed(simtrans_run, pretrain_parser, "--method", "simtrans_simnet", "--batch_size", "4",
                   "--similarity_pretrained", "none", "--batch_class_num_B", "2")
    noisy = parsed(simtrans_run, pretrain_parser, "--method", "simtrans_simnet", "--batch_size", "4",
                   "--similarity_pretrained", "none", "--batch_class_num_B", "2", "--noisy_frac", "0.5")
    assert noisy.options.run_name() == "simtrans_simnet_h2_b0_nf0.5"
    dataset, batches, _ = simnet_data(plain)
    labels = np.concatenate([dataset.datasets[0].labels, dataset.datasets[1].labels])
    n_base = len(dataset.datasets[0])
    zero = parsed(simtrans_run, pretrain_parser, "--method", "simtrans_simnet", "--batch_size", "4",
                  "--similarity_pretrained", "none", "--batch_class_num_B", "2", "--noisy_frac", "0")
    assert simnet_data(zero)[1](3) == batches(3)
    assert all(max(b[:4]) < n_base for b in batches(0))
    _, noisy_batches, _ = simnet_data(noisy)
    fused = [b[:4] for epoch in range(3) for b in noisy_batches(epoch) if min(b[:4]) >= n_base]
    assert fused, "no noisy batch on the A side in 3 epochs"
    for side in fused:
        assert len(set(labels[side].tolist())) == 4  # distinct novel classes: only the 4 self-pairs are similar
    b_sides = [b[4:] for b in noisy_batches(0)]
    assert any(len(set(labels[s].tolist())) == 4 for s in b_sides)  # B gets its noisy batches too (plain: 2 classes)
    assert all(len(set(labels[s].tolist())) <= 2 for s in (b[4:] for b in batches(0)))
