"""The filelist writers (data/filelists.py) through their CLI, write_miniImagenet_filelist.py,
on tiny synthetic datasets (8x8 images) of every supported layout, plus the shared mini-ImageNet."""
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Dict, List

import pytest
from PIL import Image

from tests.conftest import DATASETS, ROOT, need
from write_miniImagenet_filelist import main

SCRIPT = ROOT / "write_miniImagenet_filelist.py"
JSONS = ("base.json", "val.json", "novel.json")


# ---------------------------------------------------------------- helpers

def make_image(path: Path, size=(8, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(path)


def write_lines(path: Path, lines: List[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def read(folder: Path) -> Dict[str, dict]:
    return {name: json.loads((folder / name).read_text()) for name in JSONS}


def run(*argv) -> Dict[str, dict]:
    """Run the CLI and return the filelists it wrote ({json name: filelist})."""
    args = [str(arg) for arg in argv]
    main(args)
    out_flag = "--out_dir" if "--out_dir" in args else "--data_path"
    return read(Path(args[args.index(out_flag) + 1]))


def fails(capsys, *argv) -> str:
    """Run the CLI, expect exit code 2 with a one-line message, and return that message."""
    with pytest.raises(SystemExit) as stop:
        main([str(arg) for arg in argv])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def classes_of(lists: Dict[str, dict]) -> List[List[str]]:
    return [lists[name]["label_names"] for name in JSONS]


# ---------------------------------------------------------------- mini-ImageNet CSV layout

CSV_SPLITS = {"train": ["wolf", "ant"], "val": ["cat"], "test": ["dog", "bee"]}


def csv_dataset(root: Path, per_class: int = 2) -> Path:
    """images/ + train/val/test.csv, classes listed out of alphabetical order."""
    for split, classes in CSV_SPLITS.items():
        rows = ["filename,label"]
        for cls in classes:
            for i in reversed(range(per_class)):
                make_image(root / "images" / f"{cls}{i}.jpg")
                rows.append(f"{cls}{i}.jpg,{cls}")
        write_lines(root / f"{split}.csv", rows)
    return root


def test_csv_layout_labels_follow_sorted_class_names(tmp_path):
    root = csv_dataset(tmp_path / "mini")
    base = run("--data_path", root)["base.json"]
    assert base["label_names"] == ["ant", "wolf"]
    assert base["image_labels"] == [0, 0, 1, 1]
    assert base["file_names"] == ["ant0.jpg", "ant1.jpg", "wolf0.jpg", "wolf1.jpg"]
    assert base["image_names"] == [str(root / "images" / name) for name in base["file_names"]]


def test_csv_layout_filelists_load_in_the_dataset_reader(tmp_path):
    from data.datasets import load_filelist
    root = csv_dataset(tmp_path / "mini")
    run("--data_path", root)
    novel = load_filelist(str(root / "novel.json"))
    assert novel["label_names"] == ["bee", "dog"] and len(novel["image_names"]) == 4


def test_runs_in_the_current_folder_without_arguments_like_the_seed(tmp_path):
    root = csv_dataset(tmp_path / "mini")
    done = subprocess.run([sys.executable, str(SCRIPT)], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == ["base.json: 2 classes, 4 images", "val.json: 1 classes, 2 images",
                                           "novel.json: 2 classes, 4 images"]
    assert read(root)["val.json"]["image_names"][0] == str(root / "images" / "cat0.jpg")


def test_a_copy_inside_the_dataset_folder_works_like_the_seed(tmp_path):
    root = csv_dataset(tmp_path / "mini")
    shutil.copy(SCRIPT, root)
    env = dict(os.environ, FSL_REPO=str(SCRIPT.parent))
    done = subprocess.run([sys.executable, SCRIPT.name], cwd=root, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert read(root)["base.json"]["label_names"] == ["ant", "wolf"]


def test_a_copy_that_cannot_find_the_repository_explains_itself(tmp_path):
    root = csv_dataset(tmp_path / "mini")
    shutil.copy(SCRIPT, root)
    env = {k: v for k, v in os.environ.items() if k != "FSL_REPO"}
    done = subprocess.run([sys.executable, SCRIPT.name], cwd=root, capture_output=True, text=True, env=env)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "FSL_REPO" in done.stderr


def test_out_dir_receives_the_filelists(tmp_path):
    root = csv_dataset(tmp_path / "mini")
    lists = run("--data_path", root, "--out_dir", tmp_path / "lists")
    assert classes_of(lists) == [["ant", "wolf"], ["cat"], ["bee", "dog"]]
    assert not (root / "base.json").exists()


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


CSV_ERRORS = {
    "missing csv": (lambda root: _remove(root / "val.csv"), ["val.csv", "missing"]),
    "missing images folder": (lambda root: _remove(root / "images"), ["images", "missing"]),
    "bad header": (lambda root: write_lines(root / "train.csv", ["file,class", "ant0.jpg,ant"]),
                   ["train.csv", "'file,class'", "'filename,label'"]),
    "spaced header": (lambda root: write_lines(root / "train.csv", ["filename, label", "ant0.jpg,ant"]),
                      ["'filename, label'", "'filename,label'"]),
    "missing image": (lambda root: _remove(root / "images" / "bee1.jpg"), ["bee1.jpg", "test.csv"]),
    "malformed row": (lambda root: write_lines(root / "val.csv", ["filename,label", "cat0.jpg"]),
                      ["val.csv line 2"]),
    "empty split": (lambda root: write_lines(root / "test.csv", ["filename,label"]),
                    ["test split is empty", "test.csv"]),
    "shared class": (lambda root: write_lines(root / "val.csv", ["filename,label", "wolf0.jpg,wolf"]),
                     ["'wolf'", "train.csv", "val.csv"]),
}


@pytest.mark.parametrize("case", sorted(CSV_ERRORS))
def test_csv_layout_errors_name_the_culprit_and_keep_old_filelists(tmp_path, capsys, case):
    root = csv_dataset(tmp_path / "mini")
    before = run("--data_path", root)
    capsys.readouterr()
    break_dataset, expected = CSV_ERRORS[case]
    break_dataset(root)
    err = fails(capsys, "--data_path", root)
    assert all(text in err for text in expected), err
    assert read(root) == before
    assert sorted(path.name for path in root.glob("*.json*")) == sorted(JSONS)


def test_missing_data_path_is_named(tmp_path, capsys):
    assert "--data_path" in fails(capsys, "--data_path", tmp_path / "nowhere")


# ---------------------------------------------------------------- CIFAR-FS / FC100 class folders

CIFAR_SPLITS = {"train": ["whale", "apple"], "val": ["bed"], "test": ["cup", "bus"]}


def class_folders(folder: Path, classes: List[str], per_class: int = 2) -> None:
    for cls in classes:
        for i in range(per_class):
            make_image(folder / cls / f"{i}.png")


def split_texts(folder: Path, splits: Dict[str, List[str]]) -> Path:
    for split, classes in splits.items():
        write_lines(folder / f"{split}.txt", classes)
    return folder


def cifar_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "cifar100"
    class_folders(root / "data", [cls for classes in CIFAR_SPLITS.values() for cls in classes])
    return root


@pytest.mark.parametrize("dataset, subfolder",
                         [("cifar_fs", "cifar_fs_bertinetto"), ("fc100", "fc100_oreshkin")])
def test_cifar_class_folders_with_the_split_archive(tmp_path, dataset, subfolder):
    root = cifar_dataset(tmp_path)
    split_texts(tmp_path / "fewshot_splits" / subfolder, CIFAR_SPLITS)
    write_lines(tmp_path / "fewshot_splits" / subfolder / "train_superclasses.txt", ["fruit"])
    lists = run("--dataset", dataset, "--data_path", root, "--split_dir", tmp_path / "fewshot_splits")
    assert classes_of(lists) == [["apple", "whale"], ["bed"], ["bus", "cup"]]
    base = lists["base.json"]
    assert base["file_names"] == ["data/apple/0.png", "data/apple/1.png",
                                  "data/whale/0.png", "data/whale/1.png"]
    assert base["image_names"][0] == str(root / "data" / "apple" / "0.png")
    assert base["image_labels"] == [0, 0, 1, 1]


def test_cifar_fs_accepts_the_csv_layout(tmp_path):
    root = csv_dataset(tmp_path / "cifar_fs")
    lists = run("--dataset", "cifar_fs", "--data_path", root)
    assert classes_of(lists) == [["ant", "wolf"], ["cat"], ["bee", "dog"]]


def test_class_listed_without_folder_is_named(tmp_path, capsys):
    root = cifar_dataset(tmp_path)
    splits = split_texts(tmp_path / "splits", {**CIFAR_SPLITS, "val": ["bed", "sofa"]})
    err = fails(capsys, "--dataset", "cifar_fs", "--data_path", root, "--split_dir", splits)
    assert "'sofa'" in err and "val.txt" in err


def test_class_in_two_split_files_is_named(tmp_path, capsys):
    root = cifar_dataset(tmp_path)
    splits = split_texts(tmp_path / "splits", {**CIFAR_SPLITS, "test": ["cup", "apple"]})
    err = fails(capsys, "--dataset", "fc100", "--data_path", root, "--split_dir", splits)
    assert "'apple'" in err and "train.txt" in err and "test.txt" in err


def test_missing_split_files_ask_for_split_dir(tmp_path, capsys):
    assert "--split_dir" in fails(capsys, "--dataset", "cifar_fs", "--data_path", cifar_dataset(tmp_path))


# ---------------------------------------------------------------- any folder-per-class dataset

def folder_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "cars"
    class_folders(root, ["Audi A4", "BMW M3", "Fiat 500", "Kia Rio"])
    split_texts(tmp_path / "lists",
                {"train": ["BMW M3", "Audi A4"], "val": ["Kia Rio"], "test": ["Fiat 500"]})
    return root


def class_flags(tmp_path: Path) -> List[str]:
    return [arg for split in ("train", "val", "test")
            for arg in (f"--{split}_classes", str(tmp_path / "lists" / f"{split}.txt"))]


@pytest.mark.parametrize("dataset", ["cars", "aircraft", "folder"])
def test_folder_per_class_with_class_files(tmp_path, dataset):
    root = folder_dataset(tmp_path)
    lists = run("--dataset", dataset, "--data_path", root, *class_flags(tmp_path))
    assert classes_of(lists) == [["Audi A4", "BMW M3"], ["Kia Rio"], ["Fiat 500"]]
    assert lists["novel.json"]["file_names"] == ["Fiat 500/0.png", "Fiat 500/1.png"]


def test_folder_per_class_with_split_dir(tmp_path):
    root = folder_dataset(tmp_path)
    lists = run("--dataset", "folder", "--data_path", root, "--split_dir", tmp_path / "lists")
    assert classes_of(lists)[1] == ["Kia Rio"]


def test_class_files_go_together(tmp_path, capsys):
    root = folder_dataset(tmp_path)
    err = fails(capsys, "--dataset", "folder", "--data_path", root, *class_flags(tmp_path)[:2])
    assert "--val_classes" in err and "--test_classes" in err


def test_empty_class_list_is_named(tmp_path, capsys):
    root = folder_dataset(tmp_path)
    write_lines(tmp_path / "lists" / "val.txt", [""])
    err = fails(capsys, "--dataset", "cars", "--data_path", root, *class_flags(tmp_path))
    assert "val.txt" in err and "no classes" in err


def test_image_dir_points_at_the_class_folders(tmp_path):
    root = folder_dataset(tmp_path)
    shutil.move(root, tmp_path / "photos")
    root.mkdir()
    lists = run("--dataset", "folder", "--data_path", root, "--image_dir", tmp_path / "photos",
                *class_flags(tmp_path))
    assert lists["val.json"]["image_names"][0] == str(tmp_path / "photos" / "Kia Rio" / "0.png")


def test_crop_needs_the_official_aircraft_layout(tmp_path, capsys):
    root = folder_dataset(tmp_path)
    err = fails(capsys, "--dataset", "aircraft", "--crop", "--data_path", root, *class_flags(tmp_path))
    assert "--crop" in err and "variants.txt" in err


def test_class_folder_without_images_is_named(tmp_path, capsys):
    root = folder_dataset(tmp_path)
    shutil.rmtree(root / "Kia Rio")
    (root / "Kia Rio").mkdir()
    assert "Kia Rio" in fails(capsys, "--dataset", "folder", "--data_path", root, *class_flags(tmp_path))


# ---------------------------------------------------------------- tiered-ImageNet

def tiered_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "tiered"
    class_folders(root / "train", ["n02", "n01"])
    class_folders(root / "val", ["n03"])
    class_folders(root / "test", ["n04", "n05"], per_class=3)
    return root


def test_tiered_imagenet_split_folders(tmp_path):
    lists = run("--dataset", "tiered_imagenet", "--data_path", tiered_dataset(tmp_path))
    assert classes_of(lists) == [["n01", "n02"], ["n03"], ["n04", "n05"]]
    assert lists["novel.json"]["image_labels"] == [0, 0, 0, 1, 1, 1]
    assert lists["val.json"]["file_names"] == ["val/n03/0.png", "val/n03/1.png"]


def test_tiered_imagenet_errors(tmp_path, capsys):
    root = tiered_dataset(tmp_path)
    class_folders(root / "val", ["n01"])
    assert "'n01'" in fails(capsys, "--dataset", "tiered_imagenet", "--data_path", root)
    shutil.rmtree(root / "test")
    assert "test" in fails(capsys, "--dataset", "tiered_imagenet", "--data_path", root)


# ---------------------------------------------------------------- CUB-200-2011

CUB_CLASSES = ["001.Alpha", "002.Beta", "003.Gamma", "004.Delta",
               "005.Eps", "006.Zeta", "007.Eta", "008.Theta"]


def cub_dataset(tmp_path: Path) -> Path:
    """The official layout: 2 images (16x12) per class, each with the box x=2, y=3, w=5, h=4."""
    root = tmp_path / "CUB_200_2011"
    images, boxes = [], []
    for cls in CUB_CLASSES:
        for i in range(2):
            image_id = len(images) + 1
            rel = f"{cls}/{cls[4:]}_{i:04d}.jpg"
            make_image(root / "images" / rel, size=(16, 12))
            images.append(f"{image_id} {rel}")
            boxes.append(f"{image_id} 2.0 3.0 5.0 4.0")
    write_lines(root / "images.txt", images)
    write_lines(root / "bounding_boxes.txt", boxes)
    write_lines(root / "classes.txt", [f"{i} {cls}" for i, cls in enumerate(CUB_CLASSES, 1)])
    return root


def test_cub_frn_split_by_class_id(tmp_path):
    lists = run("--dataset", "cub", "--data_path", cub_dataset(tmp_path))
    assert classes_of(lists) == [["002.Beta", "004.Delta", "006.Zeta", "008.Theta"],
                                 ["001.Alpha", "005.Eps"], ["003.Gamma", "007.Eta"]]
    val = lists["val.json"]
    assert val["file_names"] == ["Alpha_0000.jpg", "Alpha_0001.jpg", "Eps_0000.jpg", "Eps_0001.jpg"]
    assert val["image_names"][0] == str(tmp_path / "CUB_200_2011" / "images" / "001.Alpha" / "Alpha_0000.jpg")


def test_cub_closerlook_split_by_sorted_folder_position(tmp_path):
    """CloserLookFewShot's rule (bl0's write_CUB_filelist.py, mmfewshot's CUBDataset): 0-based position
    of the sorted class folder even -> base, 1 mod 4 -> val, 3 mod 4 -> novel. FRN's rule counts class
    ids from 1, so its novel classes are CloserLook base classes."""
    root = cub_dataset(tmp_path)
    closerlook = classes_of(run("--dataset", "cub", "--split", "closerlook", "--data_path", root,
                                "--out_dir", tmp_path / "closerlook"))
    assert closerlook == [["001.Alpha", "003.Gamma", "005.Eps", "007.Eta"], ["002.Beta", "006.Zeta"],
                          ["004.Delta", "008.Theta"]]
    frn = classes_of(run("--dataset", "cub", "--split", "frn", "--data_path", root, "--out_dir", tmp_path / "frn"))
    assert set(frn[2]) < set(closerlook[0])


def test_cub_closerlook_follows_the_folders_not_classes_txt(tmp_path):
    """bl0 sorts the folders of images/; classes.txt ids play no part (here they run backwards)."""
    root = cub_dataset(tmp_path)
    write_lines(root / "classes.txt", [f"{i} {cls}" for i, cls in enumerate(reversed(CUB_CLASSES), 1)])
    lists = run("--dataset", "cub", "--split", "closerlook", "--data_path", root, "--out_dir", tmp_path / "out")
    assert lists["base.json"]["label_names"] == ["001.Alpha", "003.Gamma", "005.Eps", "007.Eta"]


def test_a_cub_split_is_refused_where_it_would_be_ignored(tmp_path, capsys):
    """The CSV layout's train/val/test.csv fix the split: --split there would be silently ignored."""
    root = csv_dataset(tmp_path / "cub_csv")
    err = fails(capsys, "--dataset", "cub", "--split", "closerlook", "--data_path", root)
    assert "CSV layout" in err and "--split" in err
    assert not (root / "base.json").exists()
    assert "--split" in fails(capsys, "--dataset", "aircraft", "--split", "closerlook", "--data_path", root)


def feat_csvs(folder: Path, splits: Dict[str, List[str]]) -> Path:
    for split, classes in splits.items():
        rows = ["filename, label, concept_label"] + [f"{cls[4:]}_{i:04d}.jpg,{cls},3,1"
                                                     for cls in classes for i in range(2)]
        write_lines(folder / "cub_feat" / f"{split}.csv", rows)
    return folder


def test_cub_feat_split_from_the_split_archive(tmp_path):
    root = cub_dataset(tmp_path)
    splits = feat_csvs(tmp_path / "fewshot_splits", {"train": ["003.Gamma", "001.Alpha"], "val": ["002.Beta"],
                                                     "test": ["004.Delta"]})
    lists = run("--dataset", "cub", "--split", "feat", "--data_path", root, "--split_dir", splits)
    assert classes_of(lists) == [["001.Alpha", "003.Gamma"], ["002.Beta"], ["004.Delta"]]
    assert lists["novel.json"]["file_names"] == ["Delta_0000.jpg", "Delta_0001.jpg"]


def test_cub_cropped_saves_bounding_box_crops(tmp_path):
    out = tmp_path / "CUB_cropped"
    lists = run("--dataset", "cub_cropped", "--data_path", cub_dataset(tmp_path), "--out_dir", out)
    base = lists["base.json"]
    assert base["image_names"][0] == str(out / "images" / "002.Beta" / "Beta_0000.png")
    assert base["file_names"][0] == "Beta_0000.jpg"
    assert all(Image.open(path).size == (5, 4) for lists_ in lists.values() for path in lists_["image_names"])


def test_cub_errors(tmp_path, capsys):
    root = cub_dataset(tmp_path)
    (root / "images" / "006.Zeta" / "Zeta_0001.jpg").unlink()
    assert "Zeta_0001.jpg" in fails(capsys, "--dataset", "cub", "--data_path", root)
    assert "--out_dir" in fails(capsys, "--dataset", "cub_cropped", "--data_path", root, "--out_dir", root)
    write_lines(tmp_path / "feat" / "train.csv", ["name,class", "Alpha_0000.jpg,001.Alpha"])
    err = fails(capsys, "--dataset", "cub", "--split", "feat", "--data_path", root,
                "--split_dir", tmp_path / "feat")
    assert "'name,class'" in err and "'filename, label, concept_label'" in err
    (root / "images.txt").unlink()
    assert "images.txt" in fails(capsys, "--dataset", "cub", "--data_path", root)


def test_cub_crop_without_box_is_named(tmp_path, capsys):
    root = cub_dataset(tmp_path)
    write_lines(root / "bounding_boxes.txt", (root / "bounding_boxes.txt").read_text().splitlines()[:-1])
    err = fails(capsys, "--dataset", "cub_cropped", "--data_path", root, "--out_dir", tmp_path / "crop")
    assert "image id 16" in err and "bounding_boxes.txt" in err
    assert not (tmp_path / "crop" / "base.json").exists()


# ---------------------------------------------------------------- FGVC-Aircraft

VARIANTS = ["707-320", "A300B4", "Cessna 172", "F/A-18", "Boeing 717", "DC-3", "Tu-134", "Yak-42"]


def aircraft_dataset(tmp_path: Path) -> Path:
    """The official layout: one trainval and one test image (16x12) per variant, boxes 2,3 → 7,7."""
    root = tmp_path / "fgvc-aircraft-2013b"
    data = root / "data"
    listing = {"trainval": [], "test": []}
    for i, variant in enumerate(VARIANTS):
        for part, image_id in (("trainval", f"{i:07d}"), ("test", f"{100 + i:07d}")):
            make_image(data / "images" / f"{image_id}.jpg", size=(16, 12))
            listing[part].append(f"{image_id} {variant}")
    write_lines(data / "variants.txt", VARIANTS)
    for part, lines in listing.items():
        write_lines(data / f"images_variant_{part}.txt", lines)
    image_ids = [line.split()[0] for lines in listing.values() for line in lines]
    write_lines(data / "images_box.txt", [f"{image_id} 2 3 7 7" for image_id in image_ids])
    return root


def test_aircraft_frn_split_by_variant_index(tmp_path):
    lists = run("--dataset", "aircraft", "--data_path", aircraft_dataset(tmp_path))
    assert classes_of(lists) == [["707-320", "Boeing 717", "Cessna 172", "Tu-134"], ["A300B4", "DC-3"],
                                 ["F/A-18", "Yak-42"]]
    novel = lists["novel.json"]
    assert novel["file_names"] == ["0000003.jpg", "0000103.jpg", "0000007.jpg", "0000107.jpg"]
    assert novel["image_labels"] == [0, 0, 1, 1]


def test_aircraft_crop(tmp_path):
    out = tmp_path / "Aircraft_fewshot"
    root = aircraft_dataset(tmp_path)
    lists = run("--dataset", "aircraft", "--crop", "--data_path", root, "--out_dir", out)
    assert lists["val.json"]["image_names"][0] == str(out / "images" / "0000001.png")
    assert Image.open(lists["val.json"]["image_names"][0]).size == (5, 4)


def test_aircraft_unknown_variant_is_named(tmp_path, capsys):
    root = aircraft_dataset(tmp_path)
    write_lines(root / "data" / "images_variant_test.txt", ["0000100 Concorde"])
    err = fails(capsys, "--dataset", "aircraft", "--data_path", root)
    assert "'Concorde'" in err and "images_variant_test.txt line 1" in err


# ---------------------------------------------------------------- the real shared mini-ImageNet

def test_real_mini_imagenet_archive(tmp_path):
    from data.datasets import ImageList
    archive = need(DATASETS / "miniimagenet" / "miniimagenet84_fs100.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "miniimagenet84_fs100"
    lists = run("--data_path", root)
    counts = [(len(meta["label_names"]), len(meta["image_names"])) for meta in lists.values()]
    assert counts == [(64, 6400), (16, 1600), (20, 2000)]
    assert all(set(meta["image_labels"]) == set(range(len(meta["label_names"]))) for meta in lists.values())
    dataset = ImageList(str(root / "novel.json"))
    image, label = dataset[len(dataset) - 1]
    assert image.size == (84, 84) and label == 19


def test_csv_layout_with_the_csvs_in_split_like_deepemds_release(tmp_path):
    """DeepEMD's mini-ImageNet release keeps its CSVs in split/ beside images/."""
    root = csv_dataset(tmp_path / "miniimagenet")
    (root / "split").mkdir()
    for name in ("train.csv", "val.csv", "test.csv"):
        (root / name).rename(root / "split" / name)
    lists = run("--data_path", root)
    assert classes_of(lists) == [["ant", "wolf"], ["cat"], ["bee", "dog"]]
    assert lists["base.json"]["image_names"][0] == str(root / "images" / "ant0.jpg")


# ---------------------------------------------------------------- meta-iNat, cross-domain, FC100 folders

def test_meta_inat_layout_of_frns_preparation(tmp_path):
    """FRN's init_meta_iNat.py writes train/<category id>/ and test/<category id>/ of links to 84x84
    images; there is no val split (FRN validates on test with --no_val), so val.json is the test set."""
    pool, root = tmp_path / "inat2017_84x84", tmp_path / "meta_iNat"
    for split, categories in (("train", ["12", "3"]), ("test", ["7", "10"])):
        for category in categories:
            for i in range(2):
                make_image(pool / category / f"{i}.png")
                (root / split / category).mkdir(parents=True, exist_ok=True)
                os.symlink(pool / category / f"{i}.png", root / split / category / f"{i}.png")
    lists = run("--dataset", "meta_inat", "--data_path", root)
    assert classes_of(lists) == [["12", "3"], ["10", "7"], ["10", "7"]]  # folder names sorted as strings
    assert lists["val.json"] == lists["novel.json"]
    assert lists["base.json"]["image_names"][0] == str(root / "train" / "12" / "0.png")
    assert lists["novel.json"]["file_names"] == ["test/10/0.png", "test/10/1.png", "test/7/0.png", "test/7/1.png"]


def test_meta_inat_errors(tmp_path, capsys):
    (tmp_path / "meta_iNat" / "train" / "1").mkdir(parents=True)
    assert "test" in fails(capsys, "--dataset", "tiered_meta_inat", "--data_path", tmp_path / "meta_iNat")


def test_cross_domain_trains_on_every_class_of_one_and_tests_on_the_other(tmp_path, capsys):
    """bl0's mini2CUB: all of mini-ImageNet's classes are base, CUB's val and novel are val and novel."""
    mini = csv_dataset(tmp_path / "mini")
    run("--data_path", mini)
    cub = tmp_path / "cub"
    for split, classes in {"train": ["001.A"], "val": ["002.B"], "test": ["004.D", "008.H"]}.items():
        rows = ["filename,label"]
        for cls in classes:
            make_image(cub / "images" / f"{cls}.jpg")
            rows.append(f"{cls}.jpg,{cls}")
        write_lines(cub / f"{split}.csv", rows)
    run("--data_path", cub)
    out = tmp_path / "mini2cub"
    lists = run("--dataset", "cross_domain", "--base_from", mini, "--eval_from", cub, "--out_dir", out)
    assert classes_of(lists) == [["ant", "bee", "cat", "dog", "wolf"], ["002.B"], ["004.D", "008.H"]]
    assert len(lists["base.json"]["image_names"]) == 10
    assert lists["novel.json"]["image_names"] == read(cub)["novel.json"]["image_names"]
    assert "--base_from" in fails(capsys, "--dataset", "cross_domain", "--eval_from", cub, "--out_dir", out)
    assert "base.json" in fails(capsys, "--dataset", "cross_domain", "--base_from", tmp_path, "--eval_from", cub,
                                "--out_dir", tmp_path / "x")


def test_fc100_in_split_folders_like_deepemds_release(tmp_path):
    root = tiered_dataset(tmp_path)
    assert classes_of(run("--dataset", "fc100", "--data_path", root)) == [["n01", "n02"], ["n03"], ["n04", "n05"]]
