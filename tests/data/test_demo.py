"""The embedded glyph demo dataset (data/demo.py): layout, splits, determinism, idempotence,
distinct classes, and that it is learnable but not trivial."""
import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from data import demo
from utils.errors import UserError

SMALL = dict(n_classes=12, images_per_class=6, image_size=32, splits=(6, 3, 3))


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def split_rows(folder):
    """{split: [(filename, label), ...]} without the header rows."""
    return {s: [tuple(r) for r in read_csv(os.path.join(folder, f"{s}.csv"))[1:]]
            for s in demo.SPLIT_NAMES}


def pixels(folder):
    """{file name: pixel array} of every image in `folder`/images."""
    images = os.path.join(folder, "images")
    return {name: np.asarray(Image.open(os.path.join(images, name)))
            for name in sorted(os.listdir(images))}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """One small dataset shared by the read-only tests."""
    return demo.build_demo_dataset(str(tmp_path_factory.mktemp("demo") / "glyphs"), **SMALL)


def test_layout_and_csv_headers(small):
    assert sorted(os.listdir(small)) == ["demo_info.json", "images", "test.csv", "train.csv",
                                         "val.csv"]
    for split in demo.SPLIT_NAMES:
        assert read_csv(os.path.join(small, f"{split}.csv"))[0] == ["filename", "label"]
    rows = [row for rows in split_rows(small).values() for row in rows]
    names = [name for name, _ in rows]
    assert len(names) == len(set(names)) == 12 * 6
    assert sorted(names) == sorted(os.listdir(os.path.join(small, "images")))
    for name, label in rows:
        assert label.startswith("glyph_") and "_U+" in label
        with Image.open(os.path.join(small, "images", name)) as img:
            assert img.mode == "RGB" and img.size == (32, 32)


def test_splits_are_disjoint_with_the_asked_sizes(small):
    labels = {s: {label for _, label in rows} for s, rows in split_rows(small).items()}
    assert [len(labels[s]) for s in demo.SPLIT_NAMES] == [6, 3, 3]
    assert not (labels["train"] & labels["val"] or labels["train"] & labels["test"]
                or labels["val"] & labels["test"])
    for rows in split_rows(small).values():
        per_class = {}
        for _, label in rows:
            per_class[label] = per_class.get(label, 0) + 1
        assert set(per_class.values()) == {6}


def test_deterministic_for_a_seed(small, tmp_path):
    again = demo.build_demo_dataset(str(tmp_path / "again"), **SMALL)
    assert split_rows(again) == split_rows(small)
    first, second = pixels(small), pixels(again)
    assert first.keys() == second.keys()
    assert all(np.array_equal(first[name], second[name]) for name in first)

    other = demo.build_demo_dataset(str(tmp_path / "other"), seed=1, **SMALL)
    assert any(not np.array_equal(first[n], a) for n, a in pixels(other).items())


def test_idempotent_and_rebuilt_when_settings_change(tmp_path):
    out = str(tmp_path / "glyphs")
    assert demo.build_demo_dataset(out, **SMALL) == os.path.abspath(out)
    marker = os.path.join(out, "images", "c000_0000.jpg")
    stamp = os.stat(marker).st_mtime_ns
    os.utime(marker, ns=(stamp - 10 ** 9, stamp - 10 ** 9))
    demo.build_demo_dataset(out, **SMALL)  # same settings: nothing rewritten
    assert os.stat(marker).st_mtime_ns == stamp - 10 ** 9

    demo.build_demo_dataset(out, **{**SMALL, "images_per_class": 4})
    assert len(os.listdir(os.path.join(out, "images"))) == 12 * 4
    with open(os.path.join(out, demo.INFO_FILE)) as f:
        assert json.load(f)["settings"]["images_per_class"] == 4
    assert os.listdir(tmp_path) == ["glyphs"]  # no temporary folders left behind


def test_incomplete_folder_is_rebuilt(tmp_path):
    out = str(tmp_path / "glyphs")
    demo.build_demo_dataset(out, **SMALL)
    os.remove(os.path.join(out, "images", "c003_0002.jpg"))
    demo.build_demo_dataset(out, **SMALL)
    assert os.path.isfile(os.path.join(out, "images", "c003_0002.jpg"))


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a demo dataset"):
        demo.build_demo_dataset(str(tmp_path), **SMALL)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_bad_splits_are_a_user_error(tmp_path):
    with pytest.raises(UserError, match="splits"):
        demo.build_demo_dataset(str(tmp_path / "x"), n_classes=12, splits=(64, 16, 20))


def test_glyph_classes_are_distinct():
    glyphs = demo.select_glyphs(100)
    chars = [g.char for g in glyphs]
    assert len(set(chars)) == len(chars) == 100
    assert len({g.name for g in glyphs}) == 100
    assert all(demo.has_glyph(c) for c in chars)
    # no two classes draw the same shape in any font, whatever their size
    signatures = np.stack([demo.glyph_signatures(c)[0] for c in chars])
    similarity = signatures @ signatures.T
    np.fill_diagonal(similarity, -1)
    assert similarity.max() <= demo.SAME_SHAPE
    for file in demo.FONT_FILES[:2]:
        drawn = {demo.probe(c, file).tobytes() for c in chars}
        assert len(drawn) == len(chars)


def test_missing_glyphs_are_rejected():
    assert demo.has_glyph("A") and demo.has_glyph("\u03a9")
    assert not demo.has_glyph("\ue000")  # private use: no glyph in DejaVu
    assert not demo.has_glyph(" ")  # no ink


def test_pool_for_fewer_classes_is_a_prefix():
    assert demo.select_glyphs(12) == demo.select_glyphs(100)[:12]


def nearest_centroid_accuracy(features, labels, rng, episodes=300, way=5, shot=1):
    """Mean accuracy of 5-way `shot`-shot episodes classified by the nearest class mean."""
    classes = np.unique(labels)
    correct = []
    for _ in range(episodes):
        chosen = rng.choice(classes, way, replace=False)
        protos, queries, targets = [], [], []
        for k, c in enumerate(chosen):
            idx = rng.permutation(np.flatnonzero(labels == c))
            protos.append(features[idx[:shot]].mean(0))
            queries.append(features[idx[shot:]])
            targets += [k] * (len(idx) - shot)
        dist = ((np.concatenate(queries)[:, None] - np.stack(protos)[None]) ** 2).sum(-1)
        correct.append(np.mean(dist.argmin(1) == np.array(targets)))
    return float(np.mean(correct))


def ink_features(images):
    """Per-image distance from the background grey (the median), normalised: a colour-blind
    view of the glyph, with no learning."""
    grey = images.mean(-1).reshape(len(images), -1)
    ink = np.abs(grey - np.median(grey, axis=1, keepdims=True))
    ink -= ink.mean(1, keepdims=True)
    return ink / (np.linalg.norm(ink, axis=1, keepdims=True) + 1e-6)


def test_learnable_but_not_trivial(tmp_path):
    folder = demo.build_demo_dataset(str(tmp_path / "glyphs"), n_classes=20,
                                     images_per_class=12, image_size=32, splits=(10, 5, 5))
    rows = [row for rows in split_rows(folder).values() for row in rows]
    images = np.stack([np.asarray(Image.open(os.path.join(folder, "images", name)), np.float32)
                       for name, _ in rows])
    labels = np.array([label for _, label in rows])
    rng = np.random.default_rng(0)
    # even a fixed, colour-blind pixel view beats chance (20%) ...
    ink = nearest_centroid_accuracy(ink_features(images), labels, rng, shot=5)
    assert ink > 0.35
    # ... but pixels alone are far from solving it: the variation has to be learnt
    assert ink < 0.9
    raw = nearest_centroid_accuracy(images.reshape(len(images), -1), labels, rng)
    assert raw < 0.5
    # images of one class really differ
    first = images[labels == labels[0]]
    assert min(np.abs(first[0] - other).mean() for other in first[1:]) > 10
