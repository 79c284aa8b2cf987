"""predict.py's features: a saved support set reused (and exported), support sets of unequal
classes, CSV support lists, --top_k, --out -, the accuracy line."""
import csv
import io
import shutil

import numpy as np
import pytest

from methods import METHODS
from tests.conftest import run_entry
from tests.predict.helpers import EXPORTABLE, load_infer, model_flags, random_checkpoint, read_csv

UNEQUAL = [m for m in EXPORTABLE if METHODS[m].supports_unequal_shots]


def run(script, *argv):
    code, out, err = run_entry(script, list(argv))
    assert code == 0, err
    return out, err


def test_a_saved_support_set_gives_the_same_predictions_and_exports(episode, tmp_path):
    """Negative-Margin: its fitted classifier is what the .pdsupport keeps (no refit, no RNG)."""
    flags = [*model_flags("neg_margin"), "--model_path", random_checkpoint("neg_margin", tmp_path / "m.pdparams")]
    out, _ = run("predict.py", *flags, "--support", episode.support, "--query", episode.query, "--out",
                 tmp_path / "a.csv", "--save_support", tmp_path / "s.pdsupport")
    assert "support set of 5 classes (10 images) ->" in out
    out, _ = run("predict.py", *flags, "--support", tmp_path / "s.pdsupport", "--query", episode.query, "--out",
                 tmp_path / "b.csv", "--seed", "7")  # another seed: nothing is refitted
    assert "(saved support set)" in out
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    run("export.py", *flags, "--support", tmp_path / "s.pdsupport", "--out_dir", tmp_path / "exported")
    load_infer().run(["--model_dir", str(tmp_path / "exported"), "--query", str(episode.query),
                      "--out", str(tmp_path / "c.csv")])
    predictions = [[r["prediction"] for r in read_csv(tmp_path / name)] for name in ("a.csv", "c.csv")]
    assert predictions[0] == predictions[1]


@pytest.mark.parametrize("method", UNEQUAL)
def test_unequal_classes_classify_and_export(method, episode, tmp_path):
    support = tmp_path / "support"
    shutil.copytree(episode.support, support)
    for name in episode.classes[:2]:  # two classes of one image, three of two
        next((support / name).iterdir()).unlink()
    flags = [*model_flags(method), "--model_path", random_checkpoint(method, tmp_path / "m.pdparams"),
             "--support", support]
    run("predict.py", *flags, "--query", episode.query, "--out", tmp_path / "p.csv")
    run("export.py", *flags, "--out_dir", tmp_path / "exported")
    got = load_infer().run(["--model_dir", str(tmp_path / "exported"), "--query", str(episode.query),
                            "--out", str(tmp_path / "i.csv")])
    predicted = read_csv(tmp_path / "p.csv")
    assert [r["prediction"] for r in predicted] == [r["prediction"] for r in read_csv(tmp_path / "i.csv")]
    assert len(predicted) == 15 and got["outputs"].shape == (15, 5)


def test_a_csv_support_list_equals_the_class_folders(episode, tmp_path):
    flags = [*model_flags("meta_frn"), "--model_path", random_checkpoint("meta_frn", tmp_path / "m.pdparams")]
    shutil.copytree(episode.support, tmp_path / "images")
    listing = tmp_path / "lists" / "support.csv"
    listing.parent.mkdir()
    # paths relative to the CSV's folder, classes listed in reverse (their order comes from the names)
    rows = [("path", "label")] + [(f"../images/{name}/{p.name}", name) for name in reversed(episode.classes)
                                  for p in sorted((episode.support / name).iterdir())]
    with open(listing, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    run("predict.py", *flags, "--support", episode.support, "--query", episode.query, "--out", tmp_path / "a.csv")
    run("predict.py", *flags, "--support", listing, "--query", episode.query, "--out", tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


def test_top_k_stdout_and_the_accuracy_line(episode, tmp_path):
    flags = [*model_flags("protonet"), "--model_path", random_checkpoint("protonet", tmp_path / "m.pdparams"),
             "--support", episode.support]
    out, err = run("predict.py", *flags, "--query", episode.query, "--out", "-", "--top_k", "3")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0])[:7] == ["image", "prediction", "score", "prediction_2", "score_2", "prediction_3", "score_3"]
    assert list(rows[0])[7:] == episode.classes
    for row in rows:  # the k best: distinct classes, their own probabilities, in decreasing order
        named = [(row["prediction"], row["score"]), (row["prediction_2"], row["score_2"]),
                 (row["prediction_3"], row["score_3"])]
        assert len({name for name, _ in named}) == 3 and all(row[name] == score for name, score in named)
        scores = [float(score) for _, score in named]
        assert scores == sorted(scores, reverse=True) and scores[0] == max(float(row[c]) for c in episode.classes)
    assert "15 images -> -" in err and "accuracy: " in err and "/15 images in class-named folders)" in err
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in sorted(episode.query.rglob("*.jpg"))[:4]:
        shutil.copy(path, flat / path.name)
    out, _ = run("predict.py", *flags, "--query", flat, "--out", tmp_path / "flat.csv")
    assert "4 images ->" in out and "accuracy" not in out  # no class-named folders: no accuracy
    assert np.isclose(sum(float(read_csv(tmp_path / "flat.csv")[0][c]) for c in episode.classes), 1.0, atol=1e-5)
