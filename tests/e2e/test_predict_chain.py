"""The whole chain, as Paddle's TIPC `lite_train_lite_infer` mode runs a model: demo data ->
pretrain -> meta-train -> test -> predict -> export -> infer, each step its own command line (a
fresh interpreter), on the embedded demo data at tiny size (about a minute on a CPU)."""
import csv
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, run_script, tiny_flags
from tests.predict.helpers import read_csv

SHOT, QUERY = 3, 4


def step(script: str, *args) -> str:
    result = run_script(script, *args)
    assert result.returncode == 0, f"{script}: {result.stderr[-2000:]}"
    return result.stdout


def split_folders(data: Path, root: Path) -> tuple:
    """The novel classes' first SHOT images (by name) as support/<class>/, the next QUERY as query/<class>/."""
    with open(data / "test.csv") as f:
        rows = list(csv.DictReader(f))
    by_class = {}
    for row in rows:
        by_class.setdefault(row["label"], []).append(row["filename"])
    for label, files in by_class.items():
        for kind, chosen in (("support", sorted(files)[:SHOT]), ("query", sorted(files)[SHOT:SHOT + QUERY])):
            (root / kind / label).mkdir(parents=True)
            for name in chosen:
                shutil.copy(data / "images" / name, root / kind / label / name)
    return root / "support", root / "query", len(by_class)


def test_demo_data_to_pretrain_meta_train_test_predict_export_infer(tmp_path):
    data = tmp_path / "glyphs"
    built = subprocess.run([sys.executable, "-m", "data.demo", "--out", str(data), "--n_classes", "18",
                            "--images_per_class", "12", "--image_size", "32", "--splits", "8", "5", "5"],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    step("write_miniImagenet_filelist.py", "--data_path", data)
    ckpt = tmp_path / "checkpoints"
    runs = ckpt / "demo"  # <checkpoint_dir>/<dataset>/<run>
    step("pretrain.py", *tiny_flags(data, ckpt, "--method", "stl_frn", "--epoch", "1", "--batch_size", "16",
                                    "--val_n_episode", "5"))
    step("meta_train.py", *tiny_flags(data, ckpt, "--method", "meta_frn", "--train_n_way", "5", "--n_shot", "1",
                                      "--n_query", "4", "--epoch", "2", "--train_n_episode", "10", "--optimizer",
                                      "adam", "--lr", "1e-3", "--val_n_episode", "10", "--pretrain_path",
                                      runs / "Conv4_stl_frn_pretrain" / "best_model.pdparams"))
    model = runs / "Conv4_meta_frn_5way_1shot_metatrain" / "best_model.pdparams"
    tested = step("test.py", *tiny_flags(data, ckpt, "--method", "meta_frn", "--model_path", model,
                                         "--test_n_episode", "20"))
    assert re.search(r"^20 Test Acc = [\d.]+% \+- [\d.]+%$", tested, re.M), tested

    support, query, n_classes = split_folders(data, tmp_path / "mine")
    flags = ["--method", "meta_frn", "--model", "Conv4", "--image_size", "32", "--dataset", "demo",
             "--model_path", model, "--num_workers", "0"]
    predicted = step("predict.py", *flags, "--support", support, "--query", query, "--out", tmp_path / "predict.csv",
                     "--save_support", tmp_path / "mine.pdsupport")
    n_query = n_classes * QUERY
    assert re.search(rf"^{n_query} images -> .*predict.csv: {n_classes} classes", predicted, re.M), predicted
    assert re.search(rf"^accuracy: [\d.]+% \(\d+/{n_query} images in class-named folders\)$", predicted, re.M)
    step("export.py", *flags, "--support", tmp_path / "mine.pdsupport", "--out_dir", tmp_path / "exported")
    inferred = step("infer.py", "--model_dir", tmp_path / "exported", "--query", query, "--out", tmp_path / "infer.csv")
    assert "oneDNN off" in inferred
    p, i = read_csv(tmp_path / "predict.csv"), read_csv(tmp_path / "infer.csv")
    assert len(p) == n_query and [r["prediction"] for r in p] == [r["prediction"] for r in i]
    # the accuracy lines agree too (same predictions, same class-named folders)
    accuracy = re.compile(r"^accuracy: .*$", re.M)
    assert accuracy.findall(predicted) == accuracy.findall(inferred)
