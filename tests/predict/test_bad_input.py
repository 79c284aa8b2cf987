"""Bad input to predict.py, export.py and infer.py: one line naming the culprit, exit code 2, and
no output file (nor a temporary one) left behind."""
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_entry
from tests.predict.helpers import model_flags, random_checkpoint


def assert_one_line_error(code: int, err: str, *needles: str) -> str:
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def assert_nothing_written(folder: Path, *names: str) -> None:
    for name in names:
        assert not (folder / name).exists(), name
    assert not list(folder.glob(".tmp_*")), "a temporary file was left behind"


@pytest.fixture(scope="module")
def setup(episode, tmp_path_factory):
    """A checkpoint, a support set saved from it, an export of it, and a second checkpoint of the
    same method (other weights) and one of another backbone."""
    root = tmp_path_factory.mktemp("bad")
    ckpt = random_checkpoint("protonet", root / "a.pdparams")
    other = random_checkpoint("protonet", root / "b.pdparams", seed=1)
    code, _, err = run_entry("predict.py", [*model_flags("protonet"), "--model_path", ckpt, "--support",
                                            episode.support, "--save_support", root / "a.pdsupport"])
    assert code == 0, err
    code, _, err = run_entry("export.py", [*model_flags("protonet"), "--model_path", ckpt, "--support",
                                           episode.support, "--out_dir", root / "exported"])
    assert code == 0, err
    return {"root": root, "ckpt": ckpt, "other": other, "saved": root / "a.pdsupport", "exported": root / "exported"}


def predict(setup, support, query, out, *extra):
    return run_entry("predict.py", [*model_flags("protonet"), "--model_path", setup["ckpt"], "--support", support,
                                    "--query", query, "--out", out, *extra])


def copy_support(episode, folder: Path) -> Path:
    target = folder / "support"
    shutil.copytree(episode.support, target)
    return target


def test_a_support_folder_with_one_class(setup, episode, tmp_path):
    support = tmp_path / "support"
    shutil.copytree(episode.support / episode.classes[0], support / episode.classes[0])
    code, _, err = predict(setup, support, episode.query, tmp_path / "out.csv")
    assert_one_line_error(code, err, str(support), f"only class {episode.classes[0]!r}", "at least 2 classes")
    assert_nothing_written(tmp_path, "out.csv")


def test_an_empty_class_folder(setup, episode, tmp_path):
    support = copy_support(episode, tmp_path)
    (support / "empty_class").mkdir()
    code, _, err = predict(setup, support, episode.query, tmp_path / "out.csv")
    assert_one_line_error(code, err, "empty_class", "holds no images")
    assert_nothing_written(tmp_path, "out.csv")


def test_a_support_file_that_is_not_an_image(setup, episode, tmp_path):
    support = copy_support(episode, tmp_path)
    bad = support / episode.classes[1] / "notes.jpg"
    bad.write_text("not a picture")
    code, _, err = predict(setup, support, episode.query, tmp_path / "out.csv", "--save_support",
                           tmp_path / "s.pdsupport")
    assert_one_line_error(code, err, str(bad), "not an image")
    assert_nothing_written(tmp_path, "out.csv", "s.pdsupport")


def test_a_query_file_that_is_not_an_image(setup, episode, tmp_path):
    bad = tmp_path / "readme.txt"
    bad.write_text("hello")
    code, _, err = predict(setup, episode.support, bad, tmp_path / "out.csv")
    assert_one_line_error(code, err, "--query", str(bad), "not an image")
    assert_nothing_written(tmp_path, "out.csv")


def test_a_query_folder_with_no_images(setup, episode, tmp_path):
    empty = tmp_path / "photos"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("no images here")
    code, _, err = predict(setup, episode.support, empty, tmp_path / "out.csv")
    assert_one_line_error(code, err, str(empty), "holds no images")
    code, _, err = predict(setup, episode.support, str(tmp_path / "photos" / "*.jpg"), tmp_path / "out.csv")
    assert_one_line_error(code, err, "matches no image file")
    assert_nothing_written(tmp_path, "out.csv")


def test_an_out_in_a_folder_that_does_not_exist(setup, episode, tmp_path):
    out = tmp_path / "missing" / "out.csv"
    code, _, err = predict(setup, episode.support, episode.query, out)
    assert_one_line_error(code, err, "--out", str(tmp_path / "missing"), "does not exist")
    assert not (tmp_path / "missing").exists()


def test_a_pdsupport_of_another_checkpoint(setup, episode, tmp_path):
    code, _, err = run_entry("predict.py", [*model_flags("protonet"), "--model_path", setup["other"], "--support",
                                            setup["saved"], "--query", episode.query, "--out", tmp_path / "out.csv"])
    assert_one_line_error(code, err, str(setup["saved"]), "a.pdparams", "b.pdparams", "sha256")
    assert_nothing_written(tmp_path, "out.csv")


def test_a_pdsupport_of_another_backbone_or_method(setup, episode, tmp_path):
    flags = model_flags("protonet")
    flags[flags.index("--model") + 1] = "ResNet12"
    code, _, err = run_entry("predict.py", [*flags, "--model_path", setup["ckpt"], "--support", setup["saved"],
                                            "--query", episode.query, "--out", tmp_path / "out.csv"])
    assert_one_line_error(code, err, "backbone Conv4, not ResNet12")
    code, _, err = run_entry("predict.py", [*model_flags("meta_frn"), "--model_path", setup["ckpt"], "--support",
                                            setup["saved"], "--query", episode.query, "--out", tmp_path / "out.csv"])
    assert_one_line_error(code, err, "--method protonet, not meta_frn")
    code, _, err = predict(setup, setup["saved"], episode.query, tmp_path / "out.csv", "--image_size", "48")
    assert_one_line_error(code, err, "--image_size 32", "48")
    assert_nothing_written(tmp_path, "out.csv")


def test_a_file_that_is_no_support_set(setup, episode, tmp_path):
    fake = tmp_path / "fake.pdsupport"
    fake.write_bytes(b"PK not really a zip")
    code, _, err = predict(setup, fake, episode.query, tmp_path / "out.csv")
    assert_one_line_error(code, err, str(fake), "not a support set")


def test_a_model_dir_without_a_model(setup, episode, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_entry("infer.py", ["--model_dir", empty, "--query", episode.query, "--out", tmp_path / "o.csv"])
    assert_one_line_error(code, err, str(empty), "no classes.json")
    half = tmp_path / "half"
    shutil.copytree(setup["exported"], half)
    next(half.glob("model.*params")).unlink()
    code, _, err = run_entry("infer.py", ["--model_dir", half, "--query", episode.query, "--out", tmp_path / "o.csv"])
    assert_one_line_error(code, err, str(half), "model.pdiparams")
    code, _, err = run_entry("infer.py", ["--model_dir", tmp_path / "nowhere", "--query", episode.query])
    assert_one_line_error(code, err, "nowhere", "not a folder")
    assert_nothing_written(tmp_path, "o.csv")


def test_infer_bad_query_and_out(setup, episode, tmp_path):
    code, _, err = run_entry("infer.py", ["--model_dir", setup["exported"], "--query", tmp_path / "none.jpg",
                                          "--out", tmp_path / "o.csv"])
    assert_one_line_error(code, err, "none.jpg", "does not exist")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    code, _, err = run_entry("infer.py", ["--model_dir", setup["exported"], "--query", episode.query, bad,
                                          "--out", tmp_path / "o.csv"])
    assert_one_line_error(code, err, str(bad), "not an image")
    code, _, err = run_entry("infer.py", ["--model_dir", setup["exported"], "--query", episode.query,
                                          "--out", tmp_path / "missing" / "o.csv"])
    assert_one_line_error(code, err, "--out", "does not exist")
    assert_nothing_written(tmp_path, "o.csv")


def test_export_refusals(setup, episode, tmp_path):
    code, _, err = run_entry("export.py", [*model_flags("deepemd"), "--model_path", setup["ckpt"], "--support",
                                           episode.support, "--out_dir", tmp_path / "e"])
    assert_one_line_error(code, err, "deepemd cannot be exported", "EMD solvers", "--backbone_only")
    code, _, err = run_entry("export.py", [*model_flags("protonet"), "--model_path", setup["ckpt"], "--support",
                                           episode.support, "--out_dir", tmp_path / "missing" / "e"])
    assert_one_line_error(code, err, "--out_dir", "does not exist")
    code, _, err = run_entry("export.py", [*model_flags("protonet"), "--model_path", setup["ckpt"], "--support",
                                           episode.support, "--out_dir", tmp_path / "e", "--backbone_only"])
    assert_one_line_error(code, err, "drop --support")
    assert not (tmp_path / "e").exists() and not list(tmp_path.glob(".tmp_export_*"))


def test_weak_shot_methods_are_pointed_to_test_py(setup, episode, tmp_path):
    code, _, err = run_entry("predict.py", ["--method", "simtrans_main", "--model", "Conv4", "--model_path",
                                            setup["ckpt"], "--support", episode.support, "--query", episode.query,
                                            "--out", tmp_path / "o.csv"])
    assert_one_line_error(code, err, "weak-shot", "test.py --method simtrans_main")


def test_unequal_classes_for_an_equal_shot_method_name_the_smallest(setup, episode, tmp_path):
    support = copy_support(episode, tmp_path)
    smallest = episode.classes[2]
    next((support / smallest).iterdir()).unlink()
    checkpoint = random_checkpoint("deepemd", tmp_path / "d.pdparams")
    code, _, err = run_entry("predict.py", [*model_flags("deepemd"), "--model_path", checkpoint, "--support", support,
                                            "--query", episode.query, "--out", tmp_path / "o.csv"])
    assert_one_line_error(code, err, "deepemd needs the same number", repr(smallest), "has 1, others up to 2")
    assert_nothing_written(tmp_path, "o.csv")


def test_mtl_needs_as_many_classes_as_its_meta_trained_head(episode, tmp_path):
    support = tmp_path / "support"
    for name in episode.classes[:3]:
        shutil.copytree(episode.support / name, support / name)
    checkpoint = random_checkpoint("mtl", tmp_path / "m.pdparams")  # a 5-way base learner
    code, _, err = run_entry("predict.py", [*model_flags("mtl"), "--model_path", checkpoint, "--support", support,
                                            "--query", episode.query, "--out", tmp_path / "o.csv"])
    assert_one_line_error(code, err, "exactly 5 classes", "the support set has 3")
    assert_nothing_written(tmp_path, "o.csv")
