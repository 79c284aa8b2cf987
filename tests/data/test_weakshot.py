"""Weak-shot folders (data/weakshot.py): the injected-outlier benchmark and the layouts of the
reference's datasets, on miniature copies built here."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data import weakshot
from utils.errors import UserError


def read(folder: Path, name: str) -> dict:
    return json.loads((folder / name).read_text())


@pytest.fixture(scope="module")
def bench(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ws") / "bench"
    weakshot.main(["inject", "--data_path", str(tiny_data), "--out_dir", str(out), "--outlier_fraction", "0.25",
                   "--test_per_class", "4", "--base_test_per_class", "2", "--seed", "3"])
    return out


def test_benchmark_replaces_a_fraction_of_each_class_by_listed_outliers(bench, tiny_data):
    web, novel, base = read(bench, "web.json"), read(bench, "novel.json"), read(bench, "base.json")
    injected = read(bench, "injected.json")["injected"]
    assert web["label_names"] == novel["label_names"] and len(web["label_names"]) == 5
    counts = np.bincount(web["image_labels"])
    assert counts.tolist() == [8] * 5  # 12 images - 4 test, 2 of the 8 replaced by outliers
    assert len(injected) == 10 and len(set(web["file_names"])) == len(web["file_names"])
    val_classes = set(read(tiny_data, "val.json")["label_names"])
    by_file = dict(zip(web["file_names"], web["image_labels"]))
    for record in injected:
        assert record["true_class"] != record["class"]
        assert web["label_names"][by_file[record["file"]]] == record["class"]
        assert (record["true_class"] in val_classes) == (record["source"] == "outside")
    assert sorted(r["source"] for r in injected).count("outside") == 5  # --open_set_share 0.5
    assert not set(web["file_names"]) & (set(novel["file_names"]) | set(base["file_names"]))
    info = read(bench, "weakshot.json")
    assert info["injected"] == 10 and info["images"]["web"] == 40
    assert weakshot.injected_files(str(bench)).keys() == {r["file"] for r in injected}


def test_benchmark_is_deterministic_for_a_seed(bench, tiny_data, tmp_path):
    again = tmp_path / "again"
    weakshot.build_benchmark(str(tiny_data), str(again), 0.25, 0.5, 4, 2, seed=3)
    other = tmp_path / "other"
    weakshot.build_benchmark(str(tiny_data), str(other), 0.25, 0.5, 4, 2, seed=4)
    assert weakshot.fingerprint(str(again)) == weakshot.fingerprint(str(bench)) != weakshot.fingerprint(str(other))


def test_benchmark_with_named_novel_classes(tiny_data, tmp_path):
    names = read(tiny_data, "base.json")["label_names"][:3]
    listed = tmp_path / "novel.txt"
    listed.write_text("\n".join(names + ["not_a_class"]) + "\n")
    weakshot.build_benchmark(str(tiny_data), str(tmp_path / "ws"), 0.25, 0.5, 4, 2, novel_classes=str(listed))
    assert read(tmp_path / "ws", "web.json")["label_names"] == sorted(names)
    assert len(read(tmp_path / "ws", "base.json")["label_names"]) == 18 - 5 - 3  # val classes are outside


@pytest.mark.parametrize("kwargs,needle", [
    (dict(fraction=1.0), "--outlier_fraction"),
    (dict(fraction=0.9), "fewer than 2"),
    (dict(test_per_class=11), "too few"),
    (dict(open_share=1.5), "--open_set_share"),
])
def test_benchmark_refuses_impossible_settings(tiny_data, tmp_path, kwargs, needle):
    settings = dict(fraction=0.25, open_share=0.5, test_per_class=4, base_test_per_class=2)
    settings.update(kwargs)
    with pytest.raises(UserError, match=needle):
        weakshot.build_benchmark(str(tiny_data), str(tmp_path / "x"), settings["fraction"], settings["open_share"],
                                 settings["test_per_class"], settings["base_test_per_class"])
    assert not (tmp_path / "x").exists()


def test_too_few_outside_images_is_refused():
    novel = {"a": [("a", f"/a{i}", f"a{i}") for i in range(10)], "b": [("b", f"/b{i}", f"b{i}") for i in range(10)]}
    with pytest.raises(UserError, match="--open_set_share"):
        weakshot.inject_outliers(novel, [("z", "/z", "z")], 0.5, 1.0, np.random.RandomState(0))


def shrink_class(folder: Path, label: int, keep: int) -> None:
    """Leave only `keep` web images of class `label` in web.json."""
    web = read(folder, "web.json")
    of_class = [i for i, of in enumerate(web["image_labels"]) if of == label]
    rows = [i for i in range(len(web["image_labels"])) if i not in of_class[keep:]]
    for key in ("image_names", "image_labels", "file_names"):
        web[key] = [web[key][i] for i in rows]
    (folder / "web.json").write_text(json.dumps(web))


@pytest.mark.parametrize("keep,needle", [(0, "no web images"), (1, "only 1 web image")])
def test_a_novel_class_without_pairs_is_refused(bench, tmp_path, keep, needle):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(bench, copy)
    shrink_class(copy, 2, keep)
    with pytest.raises(UserError, match=needle):
        weakshot.load_weakshot(str(copy))


# ----- the reference's layouts --------------------------------------------------------------
def image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (120, 30, 200)).save(path)


def test_cub_layout(tmp_path):
    root = tmp_path / "CUB"
    classes = ["001.A", "002.B", "003.C", "004.D"]
    rows, split = [], []
    for c, cls in enumerate(classes):
        for i in range(4):
            image_id = str(c * 4 + i + 1)
            rel = f"{cls}/{cls[4:]}_{i}.jpg"
            image(root / "CUB_200_2011" / "images" / rel)
            rows.append(f"{image_id} {rel}")
            split.append(f"{image_id} {int(i < 3)}")
    (root / "CUB_200_2011" / "images.txt").write_text("\n".join(rows) + "\n")
    (root / "CUB_200_2011" / "train_test_split.txt").write_text("\n".join(split) + "\n")
    for cls in classes[2:]:
        for i in range(3):
            image(root / "CUB_web" / cls / f"web{i}.jpg")
    splits = tmp_path / "fewshot_splits" / "cub_simtrans"
    splits.mkdir(parents=True)
    (splits / "trainvalclasses.txt").write_text("001.A\n002.B\n")
    (splits / "testclasses.txt").write_text("003.C\n004.D\n")
    (tmp_path / "dups.txt").write_text("CUB_web/004.D/web0.jpg\n")
    out = tmp_path / "ws"
    weakshot.main(["cub", "--data_path", str(root), "--split_dir", str(tmp_path / "fewshot_splits"),
                   "--exclude", str(tmp_path / "dups.txt"), "--out_dir", str(out)])
    base = read(out, "base.json")
    assert base["label_names"] == ["001.A", "002.B"] and len(base["image_names"]) == 6
    assert len(read(out, "base_test.json")["image_names"]) == 2 and len(read(out, "novel.json")["image_names"]) == 2
    web = read(out, "web.json")
    assert np.bincount(web["image_labels"]).tolist() == [3, 2] and "CUB_web/004.D/web0.jpg" not in web["file_names"]
    assert not (out / "injected.json").exists()


def test_aircraft_layout_with_slashes_in_variant_names(tmp_path):
    root = tmp_path / "Air"
    data = root / "fgvc-aircraft-2013b" / "data"
    variants = list(weakshot.AIRCRAFT_NOVEL) + ["707-320", "A380"]
    data.mkdir(parents=True)
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    lines = {"trainval": [], "test": []}
    for v, variant in enumerate(variants):
        for i, part in enumerate(("trainval", "trainval", "test")):
            image_id = f"{v:04d}{i:03d}"
            image(data / "images" / f"{image_id}.jpg")
            lines[part].append(f"{image_id} {variant}")
        if variant in weakshot.AIRCRAFT_NOVEL:
            for i in range(2):
                image(root / "hardest_new_set" / variant / f"{i}.jpg")
    for part, rows in lines.items():
        (data / f"images_variant_{part}.txt").write_text("\n".join(rows) + "\n")
    out = tmp_path / "ws"
    weakshot.weakshot_aircraft(str(root), str(out))
    web = read(out, "web.json")
    assert len(web["label_names"]) == 25 and "F/A-18" in web["label_names"] and len(web["image_names"]) == 50
    assert read(out, "base.json")["label_names"] == ["707-320", "A380"]


def test_folder_layout_takes_every_fourth_class_as_novel(tmp_path):
    classes = [f"c{i}" for i in range(8)]
    for cls in classes:
        for part, n in (("train", 3), ("test", 2), ("web", 3)):
            for i in range(n):
                image(tmp_path / part / cls / f"{i}.jpg")
    out = tmp_path / "ws"
    weakshot.weakshot_folders(str(tmp_path / "train"), str(tmp_path / "test"), str(tmp_path / "web"), str(out))
    assert read(out, "web.json")["label_names"] == ["c0", "c4"] and len(read(out, "base.json")["label_names"]) == 6


def test_cars_layout(tmp_path):
    names = ["Alpha", "Beta", "Gamma", "Delta", "Epsilon"]
    root = compcars(tmp_path, names)
    out = tmp_path / "ws"
    weakshot.weakshot_cars(str(root), str(out))
    assert read(out, "web.json")["label_names"] == ["Alpha", "Gamma"]  # sorted web folders, i % 4 == 0
    assert len(read(out, "base.json")["image_names"]) == 6 and len(read(out, "novel.json")["image_names"]) == 2


def test_oracle_folder_drops_exactly_the_injected_images(bench, tmp_path):
    weakshot.main(["oracle", "--data_path", str(bench), "--out_dir", str(tmp_path / "oracle")])
    web, oracle = read(bench, "web.json"), read(tmp_path / "oracle", "web.json")
    injected = {r["file"] for r in read(bench, "injected.json")["injected"]}
    assert set(oracle["file_names"]) == set(web["file_names"]) - injected
    assert read(tmp_path / "oracle", "novel.json") == read(bench, "novel.json")
    assert not (tmp_path / "oracle" / "injected.json").exists()


# ----- WebVision / ImageNet (a synthetic copy of the reference's layout) -----------------------
WNIDS = ["n00000005", "n00000001", "n00000004", "n00000002", "n00000003"]  # listed unsorted on purpose


def imagenet_webvision(tmp_path: Path) -> tuple:
    """ImageNet/ (train/<WNID>/, train_files.txt, val/, ground truth, meta.mat) and WebVision/ (info/,
    train_files_118.txt, subset118/) with 5 classes; ILSVRC2012 ids run in another order than the
    sorted WNIDs, so the ground truth only resolves through meta.mat."""
    scipy_io = pytest.importorskip("scipy.io")
    imagenet, webvision = tmp_path / "ImageNet", tmp_path / "WebVision"
    ordered = sorted(WNIDS)
    rows = []
    for wnid in WNIDS:
        for i in range(2):
            image(imagenet / "train" / wnid / f"{wnid}_{i}.JPEG")
            rows.append(f"train/{wnid}/{wnid}_{i}.JPEG,{wnid}")
    (imagenet / "train_files.txt").write_text("\n".join(rows) + "\n")
    ilsvrc = {k: ordered[(2 * k) % 5] for k in range(1, 6)}  # ILSVRC2012_ID -> WNID, a permutation
    synsets = np.zeros((5, 1), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O")])
    for row, (k, wnid) in enumerate(ilsvrc.items()):
        synsets[row, 0] = (np.array([[k]], dtype=np.uint16), np.array([wnid]), np.array(["a thing"]))
    scipy_io.savemat(str(imagenet / "meta.mat"), {"synsets": synsets})
    truth = [(k - 1) % 5 + 1 for k in range(1, 11)]  # val image k has ILSVRC2012_ID truth[k-1]
    for k in range(1, 11):
        image(imagenet / "val" / f"ILSVRC2012_val_{k:08d}.JPEG")
    (imagenet / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{t}\n" for t in truth))
    (webvision / "info").mkdir(parents=True)
    (webvision / "info" / "synsets.txt").write_text("".join(f"{w} some words\n" for w in ordered))
    # queries 1..5 -> synsets 1..5 (1-based); query 6 is a second query of synset 2
    (webvision / "info" / "queries_synsets_map.txt").write_text("".join(f"{q} {q}\n" for q in range(1, 6)) + "6 2\n")
    lines = []
    for query, synset in ((1, 0), (1, 0), (2, 1), (6, 1), (2, 1), (3, 2)):
        rel = f"google/q{query:04d}/{len(lines)}.jpg"
        image(webvision / "subset118" / rel)
        lines.append(f"{rel} {synset}")
    (webvision / "train_files_118.txt").write_text("\n".join(lines) + "\n")
    return imagenet, webvision, ilsvrc, truth


def test_webvision_layout_as_the_reference_splits_it(tmp_path):
    imagenet, webvision, ilsvrc, truth = imagenet_webvision(tmp_path)
    out = tmp_path / "ws"
    weakshot.main(["webvision", "--imagenet", str(imagenet), "--webvision", str(webvision), "--novel_split", "2",
                   "--out_dir", str(out)])
    ordered = sorted(WNIDS)
    novel, base = ordered[:2], ordered[2:]  # the first n WNIDs in sorted order
    web = read(out, "web.json")
    assert web["label_names"] == novel and read(out, "base.json")["label_names"] == base
    # web images labelled by their line's synset row; the query check passes for both queries of synset 2;
    # synset 3's image is a base class, left out
    assert web["file_names"] == ["google/q0001/0.jpg", "google/q0001/1.jpg", "google/q0002/2.jpg",
                                 "google/q0002/4.jpg", "google/q0006/3.jpg"]
    assert web["image_labels"] == [0, 0, 1, 1, 1]
    assert web["image_names"][0] == str(webvision / "subset118" / "google" / "q0001" / "0.jpg")
    expected = {f"val/ILSVRC2012_val_{k:08d}.JPEG": ilsvrc[truth[k - 1]] for k in range(1, 11)}
    novel_test = read(out, "novel.json")
    assert {f: novel_test["label_names"][y] for f, y in zip(novel_test["file_names"], novel_test["image_labels"])} \
        == {f: w for f, w in expected.items() if w in novel}
    base_test = read(out, "base_test.json")
    assert len(base_test["file_names"]) == sum(w in base for w in expected.values())
    assert len(read(out, "base.json")["image_names"]) == 6 and len(read(out, "novel_train.json")["image_names"]) == 4


@pytest.mark.parametrize("damage, needle", [
    ("orphan query", "query q0009"),
    ("no ground truth", "ILSVRC2012_validation_ground_truth.txt"),
    ("no meta.mat", "meta.mat"),
    ("split too large", "--novel_split 5"),
])
def test_webvision_bad_input_is_one_line(tmp_path, capsys, damage, needle):
    imagenet, webvision, _, _ = imagenet_webvision(tmp_path)
    split = "2"
    if damage == "orphan query":
        image(webvision / "subset118" / "google" / "q0009" / "x.jpg")
        with open(webvision / "train_files_118.txt", "a") as f:
            f.write("google/q0009/x.jpg 0\n")
    elif damage == "no ground truth":
        (imagenet / "ILSVRC2012_validation_ground_truth.txt").unlink()
    elif damage == "no meta.mat":
        (imagenet / "meta.mat").unlink()
    else:
        split = "5"
    with pytest.raises(SystemExit) as stop:
        weakshot.main(["webvision", "--imagenet", str(imagenet), "--webvision", str(webvision), "--novel_split", split,
                       "--out_dir", str(tmp_path / "ws")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "ws").exists()


def test_webvision_default_is_the_references_118(tmp_path):
    imagenet, webvision, _, _ = imagenet_webvision(tmp_path)
    with pytest.raises(UserError, match="118 of 1,000"):
        weakshot.weakshot_webvision(str(imagenet), str(webvision), str(tmp_path / "ws"))


def compcars(tmp_path: Path, names) -> Path:
    """A CompCars copy: each model 2 train + 1 test images and 2 web images."""
    scipy_io = pytest.importorskip("scipy.io")
    root = tmp_path / "Car"
    cells = np.empty((len(names), 1), dtype=object)
    for i, name in enumerate(names):
        cells[i, 0] = name
    (root / "CampCar" / "misc").mkdir(parents=True)
    scipy_io.savemat(str(root / "CampCar" / "misc" / "make_model_name.mat"), {"model_names": cells})
    listed = {"train": [], "test": []}
    for model_id, name in enumerate(names, start=1):
        for i, part in enumerate(("train", "train", "test")):
            rel = f"1/{model_id}/2014/{i}.jpg"
            image(root / "CampCar" / "image" / rel)
            listed[part].append(rel)
        for i in range(2):
            image(root / "web_data" / name / f"{i}.jpg")
    (root / "CampCar" / "train_test_split" / "classification").mkdir(parents=True)
    for part, rows in listed.items():
        (root / "CampCar" / "train_test_split" / "classification" / f"{part}.txt").write_text("\n".join(rows) + "\n")
    return root


def test_cars_novel_split_takes_the_first_models_of_the_references_list(tmp_path, capsys):
    models = weakshot.compcars_models()
    assert len(models) == 431 and "EXCELLE  XT" in models  # double spaces kept: they name web folders
    names = [models[3], models[0], models[5], models[1]]  # in CompCars' own id order, not the list's
    root = compcars(tmp_path, names)
    out = tmp_path / "ws"
    weakshot.main(["cars", "--data_path", str(root), "--novel_split", "2", "--out_dir", str(out)])
    assert read(out, "web.json")["label_names"] == sorted(models[:2])
    assert read(out, "base.json")["label_names"] == sorted([models[3], models[5]])
    assert len(read(out, "novel_train.json")["image_names"]) == 4 and len(read(out, "novel.json")["image_names"]) == 2
    assert read(out, "base_web.json")["label_names"] == sorted([models[3], models[5]])
    for too_large in ("431", "500"):
        with pytest.raises(SystemExit):
            weakshot.main(["cars", "--data_path", str(root), "--novel_split", too_large,
                           "--out_dir", str(tmp_path / "x")])
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--novel_split {too_large}" in err and "431 models" in err
    assert not (tmp_path / "x").exists()
    weakshot.main(["cars", "--data_path", str(root), "--out_dir", str(out)])  # the default: every 4th web folder
    assert read(out, "web.json")["label_names"] == [sorted(names)[0]]
    assert len(read(out, "base_web.json")["label_names"]) == 3
