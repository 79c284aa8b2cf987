"""Weak-shot folders for SimTrans: base classes with clean labelled images, novel classes with
noisy web images.

A weak-shot folder holds only filelists (format: data/datasets.py), pointing at the images where
they are:
    base.json       clean training images of the base classes          (SimNet, step 1)
    base_test.json  clean test images of the base classes              (SimNet's base-class F1)
    web.json        web images of the novel classes, labelled by query  (steps 0, 2, 3)
    novel.json      clean test images of the novel classes             (evaluation)
    novel_train.json  clean training images of the novel classes, where the dataset has them (the
                    oracle --exp_type CleanAll, the SimNet's --source_set clean_novel)
    base_web.json   web images of the base classes, where the crawl has them (CompCars; the SimNet's
                    --source_set noisy_base)
    weakshot.json   what was built, from what, and the counts
    injected.json   benchmarks only: the outliers put into web.json, with their true class

Builders (python -m data.weakshot <layout> --help):
    cub       CUB-200-2011 + CUB_web/<class>/ (SimTrans's 150/50 split, cub_simtrans/*.txt)
    aircraft  fgvc-aircraft-2013b + hardest_new_set/<variant>/ (SimTrans's 25 novel variants)
    cars      CompCars ("CampCar") + web_data/<model>/ (novel = every 4th sorted web class, or with
              --novel_split n the first n of SimTrans's explicit list of 431 models)
    webvision ImageNet (882 base classes, clean) + WebVision 2.0 (118 novel classes, web images), the
              reference's WebVision setting
    folder    WebVision-style: clean train/ and test/ folders of class folders + a web/ folder
    inject    a benchmark from any labelled dataset with filelists or CSVs (e.g. the shared
              archives): base = train classes, novel = test classes (or --novel_classes), and a
              chosen fraction of each novel class's training images replaced by outliers, images
              of other novel classes and of the val classes (outside the split)
    oracle    an inject benchmark without its outliers (what perfect denoising would train on)

Every stage of SimTrans checks the folder with `load_weakshot` (each novel class needs web
images to pair) and tags what it writes with the folder's `fingerprint`, so a later stage
refuses outputs made for another weak-shot dataset.
"""
import argparse
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from data.datasets import filelist_path, load_filelist
from data.filelists import (
    aircraft_variant_images,
    aircraft_variants,
    cub_index,
    cub_train_test,
    dataset_folder,
    has_csv_layout,
    list_images,
    need_folder,
    read_class_list,
    read_lines,
    read_split_csv,
    read_table,
    write_json_files,
)
from utils.errors import OneLineParser, UserError, exit_on_user_error

INFO_FILE = "weakshot.json"
INJECTED_FILE = "injected.json"
FINGERPRINT_SPLITS = ("base", "web", "novel")  # what a trained model depends on
MIN_WEB_IMAGES = 2  # a class's similarity matrix needs pairs of distinct images

Item = Tuple[str, str, str]  # (class name, absolute image path, file name)

#: FGVC-Aircraft variants that are novel in SimTrans (`data/Air_helper.py`: 25 of its 37-name list)
AIRCRAFT_NOVEL = ("F/A-18", "Eurofighter Typhoon", "DHC-6", "C-130", "SR-20", "Gulfstream V", "DHC-1", "CRJ-900",
                  "757-300", "Fokker 70", "PA-28", "Saab 2000", "Tu-154", "Spitfire", "Model B200", "Saab 340",
                  "An-12", "Cessna 208", "A321", "DR-400", "Cessna 525", "ATR-72", "Gulfstream IV", "737-200",
                  "Cessna 172")


# ---------------------------------------------------------------- reading a weak-shot folder

@dataclass
class WeakShot:
    """The filelists of a weak-shot folder that SimTrans stages read."""
    path: str
    novel_classes: List[str]
    web: dict
    fingerprint: str


def fingerprint(data_path: str, metas: Optional[Dict[str, dict]] = None) -> str:
    """16 hex digits identifying the classes, file names and labels of base/web/novel.json (not
    where the folder lies), written into every SimTrans output. `metas` maps split names to
    filelists already read with `load_filelist`; the other splits are read from `data_path`."""
    metas = metas or {}
    digest = hashlib.sha256()
    for split in FINGERPRINT_SPLITS:
        meta = metas[split] if split in metas else load_filelist(filelist_path(data_path, split))
        digest.update(json.dumps([split, meta["label_names"], meta["file_names"], meta["image_labels"]]).encode())
    return digest.hexdigest()[:16]


def load_weakshot(data_path: str) -> WeakShot:
    """Check a weak-shot folder: web.json and novel.json list the same novel classes and every
    novel class has at least two web images (one-line errors otherwise)."""
    web_path = filelist_path(data_path, "web")
    web = load_filelist(web_path)
    novel = load_filelist(filelist_path(data_path, "novel"))
    if web["label_names"] != novel["label_names"]:
        raise UserError(f"{web_path} and novel.json list different novel classes; rebuild the folder with "
                        f"python -m data.weakshot")
    counts = np.bincount(np.asarray(web["image_labels"], dtype=np.int64), minlength=len(web["label_names"]))
    for name, count in zip(web["label_names"], counts):
        if count < MIN_WEB_IMAGES:
            what = "no web images" if count == 0 else "only 1 web image (no pair to compare)"
            raise UserError(f"novel class {name!r} has {what} in {web_path}; SimTrans needs at least "
                            f"{MIN_WEB_IMAGES} per class: add images or drop the class")
    return WeakShot(os.path.abspath(data_path), list(web["label_names"]), web,
                    fingerprint(data_path, {"web": web, "novel": novel}))


def injected_files(data_path: str) -> Optional[Dict[str, dict]]:
    """{web file name: record} of a benchmark's injected outliers, or None for real web data."""
    path = os.path.join(data_path, INJECTED_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return {record["file"]: record for record in json.load(f)["injected"]}


# ---------------------------------------------------------------- writing a weak-shot folder

def filelist(classes: Sequence[str], items: Sequence[Item]) -> dict:
    """A filelist over `classes` (labels in that order, which may include classes without
    images), images by label then file name."""
    label_of = {name: label for label, name in enumerate(classes)}
    unknown = next((cls for cls, _, _ in items if cls not in label_of), None)
    if unknown is not None:
        raise ValueError(f"class {unknown!r} is not among the listed classes")
    items = sorted(items, key=lambda item: (label_of[item[0]], item[2]))
    return {"label_names": list(classes), "image_names": [path for _, path, _ in items],
            "image_labels": [label_of[cls] for cls, _, _ in items], "file_names": [name for _, _, name in items]}


#: optional parts of a weak-shot folder, written when the dataset has them (an earlier folder's copy is removed)
OPTIONAL_PARTS = ("novel_train", "base_web")


def write_weakshot(out_dir: str, base: Sequence[Item], base_test: Sequence[Item], web: Sequence[Item],
                   novel_test: Sequence[Item], info: dict, injected: Optional[List[dict]] = None,
                   novel_train: Sequence[Item] = (), base_web: Sequence[Item] = ()) -> Dict[str, dict]:
    """Check the parts, then write the folder's files (each to a temporary name first).
    `novel_train` (clean training images of the novel classes) and `base_web` (web images of the
    base classes) are written when given."""
    base_classes = sorted({cls for cls, _, _ in base})
    novel_classes = sorted({cls for cls, _, _ in web} | {cls for cls, _, _ in novel_test})
    shared = sorted(set(base_classes) & set(novel_classes))
    if shared:
        raise UserError(f"class {shared[0]!r} is both a base and a novel class; the split must not share classes")
    for part, items in (("base training", base), ("novel test", novel_test), ("web", web)):
        if not items:
            raise UserError(f"the {part} images are empty; check the dataset folders and the class split")
    web_counts = {cls: 0 for cls in novel_classes}
    for cls, _, _ in web:
        web_counts[cls] += 1
    for cls, count in web_counts.items():
        if count < MIN_WEB_IMAGES:
            raise UserError(f"novel class {cls!r} gets {count} web image(s); SimTrans needs at least "
                            f"{MIN_WEB_IMAGES} per class: add web images or drop the class")
    names = [name for _, _, name in web]
    if len(set(names)) != len(names):
        raise UserError("two web images share a file name; give them distinct paths")
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    lists = {"base.json": filelist(base_classes, base), "web.json": filelist(novel_classes, web),
             "novel.json": filelist(novel_classes, novel_test)}
    if base_test:
        lists["base_test.json"] = filelist(base_classes, base_test)
    if novel_train:
        lists["novel_train.json"] = filelist(novel_classes, novel_train)
    if base_web:
        lists["base_web.json"] = filelist(base_classes, base_web)
    info = dict(info, base_classes=len(base_classes), novel_classes=len(novel_classes),
                images={name[:-5]: len(meta["image_names"]) for name, meta in lists.items()})
    files = {os.path.join(out_dir, name): meta for name, meta in lists.items()}
    files[os.path.join(out_dir, INFO_FILE)] = info
    if injected is not None:
        files[os.path.join(out_dir, INJECTED_FILE)] = {"injected": injected}
    write_json_files(files)
    # a folder written over another must not keep parts this dataset lacks (an outlier list, say)
    stale = [f"{part}.json" for part in OPTIONAL_PARTS if f"{part}.json" not in lists]
    stale += [INJECTED_FILE] if injected is None else []
    for name in stale:
        if os.path.exists(os.path.join(out_dir, name)):
            os.remove(os.path.join(out_dir, name))
    return lists


# ---------------------------------------------------------------- benchmark by injected outliers

def read_labelled(data_path: str, split: str) -> List[Item]:
    """The images of one split of a labelled dataset: its filelist (base/val/novel.json) if
    written, else its CSV (train/val/test.csv of the mini-ImageNet layout)."""
    json_name = {"train": "base", "val": "val", "test": "novel"}[split]
    path = os.path.join(data_path, f"{json_name}.json")
    if os.path.isfile(path):
        meta = load_filelist(path)
        return [(meta["label_names"][label], image, name)
                for label, image, name in zip(meta["image_labels"], meta["image_names"], meta["file_names"])]
    if has_csv_layout(data_path):
        return read_split_csv(os.path.abspath(data_path), split).items
    raise UserError(f"no {json_name}.json or {split}.csv in {data_path}; point --data_path at a dataset with "
                    f"filelists (write_miniImagenet_filelist.py) or the mini-ImageNet CSV layout")


def by_class(items: Sequence[Item]) -> Dict[str, List[Item]]:
    groups: Dict[str, List[Item]] = {}
    for item in sorted(items, key=lambda item: (item[0], item[2])):
        groups.setdefault(item[0], []).append(item)
    return groups


def split_per_class(groups: Dict[str, List[Item]], n_test: int, rng: np.random.RandomState,
                    role: str) -> Tuple[List[Item], List[Item]]:
    """(training, test) images: `n_test` random images of each class go to the test set."""
    train, test = [], []
    for cls, items in groups.items():
        if len(items) < n_test + MIN_WEB_IMAGES:
            raise UserError(f"{role} class {cls!r} has {len(items)} images: too few for {n_test} test images "
                            f"and {MIN_WEB_IMAGES} training images; lower the test images per class")
        order = rng.permutation(len(items))
        test += [items[i] for i in order[:n_test]]
        train += [items[i] for i in order[n_test:]]
    return train, test


def inject_outliers(novel_train: Dict[str, List[Item]], outside: List[Item], fraction: float, open_share: float,
                    rng: np.random.RandomState) -> Tuple[List[Item], List[dict]]:
    """The web images of the novel classes: in each class a `fraction` of its training images is
    replaced by outliers, `open_share` of them images of classes outside the split (`outside`),
    the rest images of other novel classes, taken from those replaced (so every image keeps a
    single label). Returns (web items, records of the injected images)."""
    kept, donors, needs = [], [], {}
    for cls, items in novel_train.items():
        order = [items[i] for i in rng.permutation(len(items))]
        k = int(round(fraction * len(items)))
        if len(items) - k < MIN_WEB_IMAGES:
            raise UserError(f"--outlier_fraction {fraction} leaves novel class {cls!r} fewer than "
                            f"{MIN_WEB_IMAGES} of its {len(items)} images; lower it")
        kept += order[k:]
        donors += order[:k]
        n_open = int(round(k * open_share))
        needs[cls] = (k - n_open, n_open)
    n_open_total = sum(n for _, n in needs.values())
    if n_open_total > len(outside):
        raise UserError(f"the outliers need {n_open_total} images of classes outside the split but the val "
                        f"classes have {len(outside)}; lower --open_set_share or --outlier_fraction")
    open_pool = [outside[i] for i in rng.permutation(len(outside))[:n_open_total]]
    donors = [donors[i] for i in rng.permutation(len(donors))]
    web, records = list(kept), []
    for cls, (n_cross, n_open) in needs.items():
        picked = [d for d in donors if d[0] != cls][:n_cross]
        if len(picked) < n_cross:
            raise UserError(f"not enough images of other novel classes to inject into {cls!r}; lower "
                            f"--outlier_fraction or raise --open_set_share")
        donors = [d for d in donors if d not in picked]
        chosen = [(item, "novel") for item in picked] + [(item, "outside") for item in open_pool[:n_open]]
        open_pool = open_pool[n_open:]
        for (true_class, path, name), source in chosen:
            web.append((cls, path, name))
            records.append({"file": name, "class": cls, "true_class": true_class, "source": source})
    return web, records


def class_roles(root: str, novel_classes: Optional[str]) -> Tuple[List[Item], List[Item], List[Item]]:
    """(base, novel, outside) images: the train, test and val split of the dataset, or with a
    file of `novel_classes` those classes (wherever they are), the other val classes outside, and
    the other train and test classes base."""
    splits = {split: read_labelled(root, split) for split in ("train", "val", "test")}
    if not novel_classes:
        return splits["train"], splits["test"], splits["val"]
    listed = set(read_class_list(novel_classes))
    everything = [item for items in splits.values() for item in items]
    novel = [item for item in everything if item[0] in listed]
    if len({cls for cls, _, _ in novel}) < 2:
        raise UserError(f"--novel_classes {novel_classes} names fewer than 2 classes of {root}; list class names "
                        f"as the dataset spells them")
    outside = [item for item in splits["val"] if item[0] not in listed]
    base = [item for item in splits["train"] + splits["test"] if item[0] not in listed]
    return base, novel, outside


def build_benchmark(data_path: str, out_dir: str, fraction: float = 0.3, open_share: float = 0.5,
                    test_per_class: int = 20, base_test_per_class: int = 10, seed: int = 0,
                    novel_classes: Optional[str] = None) -> Dict[str, dict]:
    """A weak-shot benchmark from a labelled dataset (see the module docstring)."""
    if not 0.0 <= fraction < 1.0:
        raise UserError(f"--outlier_fraction must be in [0, 1) (got {fraction})")
    if not 0.0 <= open_share <= 1.0:
        raise UserError(f"--open_set_share must be in [0, 1] (got {open_share})")
    if test_per_class < 1 or base_test_per_class < 0:
        raise UserError("--test_per_class must be >= 1 and --base_test_per_class >= 0")
    root = dataset_folder(data_path)
    rng = np.random.RandomState(seed)
    base_items, novel_items, outside = class_roles(root, novel_classes)
    base, base_test = split_per_class(by_class(base_items), base_test_per_class, rng, "base")
    novel_train, novel_test = split_per_class(by_class(novel_items), test_per_class, rng, "novel")
    web, records = inject_outliers(by_class(novel_train), outside if open_share > 0 else [], fraction,
                                   open_share, rng)
    info = {"layout": "inject", "source": root, "novel_classes": novel_classes, "outlier_fraction": fraction,
            "open_set_share": open_share, "test_per_class": test_per_class,
            "base_test_per_class": base_test_per_class, "seed": seed, "injected": len(records)}
    # novel_train: the novel classes' training images before any was replaced (the clean oracle's)
    return write_weakshot(out_dir, base, base_test, web, novel_test, info, records, novel_train=novel_train)


def write_oracle(data_path: str, out_dir: str) -> Dict[str, dict]:
    """The benchmark `data_path` with its injected outliers removed from web.json: training on it
    is the upper bound that perfect denoising would reach."""
    injected = injected_files(data_path)
    if injected is None:
        raise UserError(f"{data_path} has no {INJECTED_FILE}: only a benchmark knows its outliers")
    parts = {}
    for split in ("base", "base_test", "web", "novel", *OPTIONAL_PARTS):
        path = os.path.join(data_path, f"{split}.json")
        meta = load_filelist(path) if os.path.isfile(path) else None
        parts[split] = [] if meta is None else [
            (meta["label_names"][label], image, name)
            for label, image, name in zip(meta["image_labels"], meta["image_names"], meta["file_names"])
            if not (split == "web" and name in injected)]
    info = {"layout": "oracle", "source": os.path.abspath(data_path), "removed": len(injected)}
    return write_weakshot(out_dir, parts["base"], parts["base_test"], parts["web"], parts["novel"], info,
                          novel_train=parts["novel_train"], base_web=parts["base_web"])


# ---------------------------------------------------------------- real web data

def web_items(web_root: str, classes: Sequence[str], root: str, exclude: Sequence[str] = ()) -> List[Item]:
    """Web images in `web_root/<class>/` (file names relative to `root`), minus `exclude`."""
    fix = "put each novel class's web images in a folder named like the class"
    items = []
    dropped = set(exclude)
    for cls in classes:
        folder = need_folder(os.path.join(web_root, cls), fix)
        items += [(cls, path, os.path.relpath(path, root)) for path in list_images(folder)
                  if os.path.relpath(path, root) not in dropped]
    return items


def excluded(path: Optional[str]) -> List[str]:
    """File names (relative to --data_path), one per line, of web images to leave out."""
    if not path:
        return []
    return [line.strip() for line in read_lines(path, "pass --exclude a text file of web image paths") if line.strip()]


def split_by_classes(items: Sequence[Item], base: Sequence[str], novel: Sequence[str]) -> Tuple[List[Item], List[Item]]:
    base_set, novel_set = set(base), set(novel)
    return [i for i in items if i[0] in base_set], [i for i in items if i[0] in novel_set]


def weakshot_cub(data_path: str, out_dir: str, split_dir: Optional[str] = None,
              exclude: Optional[str] = None) -> Dict[str, dict]:
    """CUB-200-2011 (official train/test split) with SimTrans's classes: base =
    trainvalclasses.txt, novel = testclasses.txt (in --split_dir or its cub_simtrans/)."""
    root = dataset_folder(data_path)
    cub = need_folder(os.path.join(root, "CUB_200_2011"), "--data_path must hold CUB_200_2011/ and CUB_web/")
    split_dir = split_dir or root
    folder = next((f for f in (split_dir, os.path.join(split_dir, "cub_simtrans"))
                   if os.path.isfile(os.path.join(f, "testclasses.txt"))), split_dir)
    base_classes = read_class_list(os.path.join(folder, "trainvalclasses.txt"))
    novel_classes = read_class_list(os.path.join(folder, "testclasses.txt"))
    is_train = cub_train_test(cub)
    train: List[Tuple[str, str, str]] = []  # (class folder, image path, path relative to images/)
    test: List[Tuple[str, str, str]] = []
    for rel, image_id in cub_index(cub).items():
        item = (rel.split("/")[0], os.path.join(cub, "images", rel), rel)
        (train if is_train.get(image_id) else test).append(item)
    base, novel_train = split_by_classes(train, base_classes, novel_classes)
    base_test, novel_test = split_by_classes(test, base_classes, novel_classes)
    web = web_items(os.path.join(root, "CUB_web"), novel_classes, root, excluded(exclude))
    return write_weakshot(out_dir, base, base_test, web, novel_test, {"layout": "cub", "source": root},
                          novel_train=novel_train)


def weakshot_aircraft(data_path: str, out_dir: str) -> Dict[str, dict]:
    """FGVC-Aircraft variants (trainval / test) with SimTrans's 25 novel variants; web images in
    hardest_new_set/<variant>/."""
    root = dataset_folder(data_path)
    data = need_folder(os.path.join(root, "fgvc-aircraft-2013b", "data"),
                        "--data_path must hold fgvc-aircraft-2013b/data/ and hardest_new_set/")
    variants = aircraft_variants(data)
    missing = [v for v in AIRCRAFT_NOVEL if v not in variants]
    if missing:
        raise UserError(f"variants.txt has no variant {missing[0]!r}; restore the FGVC-Aircraft files")
    base_classes = [v for v in variants if v not in AIRCRAFT_NOVEL]
    parts = {}
    for part in ("trainval", "test"):
        parts[part] = [(variant, os.path.join(data, "images", f"{image_id}.jpg"), f"{image_id}.jpg")
                       for image_id, variant in aircraft_variant_images(data, part, set(variants))]
    base, novel_train = split_by_classes(parts["trainval"], base_classes, AIRCRAFT_NOVEL)
    base_test, novel_test = split_by_classes(parts["test"], base_classes, AIRCRAFT_NOVEL)
    web = web_items(os.path.join(root, "hardest_new_set"), AIRCRAFT_NOVEL, root)
    return write_weakshot(out_dir, base, base_test, web, novel_test, {"layout": "aircraft", "source": root},
                          novel_train=novel_train)


def every_fourth(classes: Sequence[str]) -> Tuple[List[str], List[str]]:
    """SimTrans's Car split (`--novel_split -1`): sorted class i is novel when i % 4 == 0."""
    ordered = sorted(classes)
    return [c for i, c in enumerate(ordered) if i % 4], [c for i, c in enumerate(ordered) if i % 4 == 0]


def subfolders(folder: str) -> List[str]:
    return sorted(n for n in os.listdir(folder) if not n.startswith(".") and os.path.isdir(os.path.join(folder, n)))


#: SimTrans's explicit CompCars model list (`data/car_helper.py`): --novel_split n takes its first n as novel
COMPCARS_LIST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "splits", "compcars_novel_split.txt")


def compcars_models() -> List[str]:
    """The 431 model names of SimTrans's explicit CompCars list, in its order (two of them have a
    double space, kept: they name web_data/ folders)."""
    with open(COMPCARS_LIST, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def cars_classes(web_classes: Sequence[str], novel_split: int = -1) -> Tuple[List[str], List[str]]:
    """(base, novel) CompCars models: with `novel_split` -1 every 4th sorted web folder is novel;
    with n >= 1 the first n models of the explicit list are novel and the rest of it base."""
    if novel_split == -1:
        return every_fourth(web_classes)
    models = compcars_models()
    if not 1 <= novel_split < len(models):
        raise UserError(f"--novel_split {novel_split} does not split the {len(models)} models of SimTrans's CompCars "
                        f"list: pass 1..{len(models) - 1} (novel: the first n), or -1 (every 4th web folder)")
    return models[novel_split:], models[:novel_split]


def weakshot_cars(data_path: str, out_dir: str, novel_split: int = -1) -> Dict[str, dict]:
    """CompCars classification split ("CampCar" folder) with web images in web_data/<model name>/;
    the categories are the sorted web folders, every 4th novel, or (`novel_split` n) the first n
    models of SimTrans's explicit list novel and its others base. Web images of the base classes
    go to base_web.json (the SimNet's --source_set noisy_base)."""
    root = dataset_folder(data_path)
    camp = need_folder(os.path.join(root, "CampCar"), "--data_path must hold CampCar/ and web_data/")
    web_root = need_folder(os.path.join(root, "web_data"), "--data_path must hold CampCar/ and web_data/")
    base_classes, novel_classes = cars_classes(subfolders(web_root), novel_split)
    try:
        from scipy.io import loadmat
    except ImportError:
        raise UserError("reading CompCars' make_model_name.mat needs scipy: pip install scipy") from None
    names = loadmat(os.path.join(camp, "misc", "make_model_name.mat"))["model_names"]
    model_name = {i + 1: (str(n[0][0]).strip() if len(n[0]) else "unknown") for i, n in enumerate(names)}
    parts = {}
    for part in ("train", "test"):
        listed = read_lines(os.path.join(camp, "train_test_split", "classification", f"{part}.txt"),
                             "restore CompCars' train_test_split/classification files")
        parts[part] = [(model_name.get(int(rel.split("/")[1]), "unknown"), os.path.join(camp, "image", rel), rel)
                       for rel in (line.strip() for line in listed) if rel]
    base, novel_train = split_by_classes(parts["train"], base_classes, novel_classes)
    base_test, novel_test = split_by_classes(parts["test"], base_classes, novel_classes)
    web = web_items(web_root, novel_classes, root)
    base_web = web_items(web_root, [c for c in base_classes if os.path.isdir(os.path.join(web_root, c))], root)
    return write_weakshot(out_dir, base, base_test, web, novel_test,
                          {"layout": "cars", "source": root, "novel_split": novel_split},
                          novel_train=novel_train, base_web=base_web)


# ---------------------------------------------------------------- WebVision / ImageNet

WEBVISION_NOVEL = 118  # the reference's only split: the first 118 WNIDs in sorted order are novel
IMAGENET_FIX = ("--imagenet must be the ImageNet folder of the reference's layout: train/<WNID>/, train_files.txt, "
                "val/, ILSVRC2012_validation_ground_truth.txt and meta.mat")
WEBVISION_FIX = ("--webvision must be the WebVision folder of the reference's layout: train_files_118.txt, "
                 "info/queries_synsets_map.txt, info/synsets.txt and the images below subset118/")


def need_file(path: str, fix: str) -> str:
    if not os.path.isfile(path):
        raise UserError(f"file {path} is missing; {fix}")
    return path


def webvision_classes(imagenet: str, novel_split: int = WEBVISION_NOVEL) -> Tuple[List[str], List[str]]:
    """(base, novel) WNIDs: the class folders of ImageNet's train/ in sorted order, the first
    `novel_split` novel (-1: the reference's 118)."""
    wnids = subfolders(need_folder(os.path.join(imagenet, "train"), IMAGENET_FIX))
    novel_split = WEBVISION_NOVEL if novel_split == -1 else novel_split
    if not 1 <= novel_split < len(wnids):
        raise UserError(f"--novel_split {novel_split} does not split the {len(wnids)} class folders of "
                        f"{os.path.join(imagenet, 'train')}: pass 1..{len(wnids) - 1} (the reference: 118 of 1,000)")
    return wnids[novel_split:], wnids[:novel_split]


def imagenet_train(imagenet: str, classes: Sequence[str]) -> List[Item]:
    """ImageNet training images of `classes` as train_files.txt lists them ('<path below the ImageNet
    folder>,<WNID>' per line)."""
    path = need_file(os.path.join(imagenet, "train_files.txt"), IMAGENET_FIX)
    wanted, items = set(classes), []
    for number, line in enumerate(read_lines(path, IMAGENET_FIX), start=1):
        if not line.strip():
            continue
        rel, sep, wnid = line.strip().rpartition(",")
        if not sep or not rel:
            raise UserError(f"{path} line {number} is {line!r}; expected '<image path>,<WNID>'")
        if wnid in wanted:
            image = os.path.join(imagenet, rel)
            if not os.path.isfile(image):
                raise UserError(f"image {image} listed in {path} line {number} is missing; re-extract ImageNet")
            items.append((wnid, image, rel))
    return items


def ilsvrc_synsets(meta_path: str) -> Dict[int, str]:
    """{ILSVRC2012_ID: WNID} of the development kit's meta.mat."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise UserError("reading ImageNet's meta.mat needs scipy: pip install scipy") from None
    try:
        synsets = loadmat(meta_path)["synsets"]
        ids, wnids = synsets["ILSVRC2012_ID"].ravel(), synsets["WNID"].ravel()
        return {int(np.asarray(i).ravel()[0]): str(np.asarray(w).ravel()[0]) for i, w in zip(ids, wnids)}
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise UserError(f"{meta_path} is not the ImageNet development kit's meta.mat (synsets with ILSVRC2012_ID "
                        f"and WNID: {type(err).__name__}); copy it from ILSVRC2012_devkit_t12/data/") from None


def imagenet_val(imagenet: str, classes: Sequence[str]) -> List[Item]:
    """ImageNet validation images of `classes`: val/ILSVRC2012_val_<k>.JPEG has the class of line k
    of ILSVRC2012_validation_ground_truth.txt (an ILSVRC2012_ID), mapped to its WNID by meta.mat."""
    truth_path = need_file(os.path.join(imagenet, "ILSVRC2012_validation_ground_truth.txt"), IMAGENET_FIX)
    to_wnid = ilsvrc_synsets(need_file(os.path.join(imagenet, "meta.mat"), IMAGENET_FIX))
    truth = [line.strip() for line in read_lines(truth_path, IMAGENET_FIX)]
    val = need_folder(os.path.join(imagenet, "val"), IMAGENET_FIX)
    wanted, items = set(classes), []
    for name in sorted(n for n in os.listdir(val) if not n.startswith(".")):
        stem = os.path.splitext(name)[0]
        try:
            k = int(stem.rsplit("_", 1)[-1])
            ilsvrc_id = int(truth[k - 1])
        except (ValueError, IndexError):
            raise UserError(f"validation image {name} has no line in {truth_path} (it has {len(truth)}); expected "
                            f"ILSVRC2012_val_<k>.JPEG with k <= the lines of the ground truth") from None
        if ilsvrc_id not in to_wnid:
            raise UserError(f"{truth_path} line {k} names class {ilsvrc_id}, which meta.mat does not list")
        if to_wnid[ilsvrc_id] in wanted:
            items.append((to_wnid[ilsvrc_id], os.path.join(val, name), f"val/{name}"))
    return items


def webvision_web(webvision: str, classes: Sequence[str]) -> List[Item]:
    """WebVision training images of `classes`: train_files_118.txt lines '<path> <synset index>' (0-based
    row of info/synsets.txt, whose first 9 characters are the WNID); the query folder of the path
    (q<id>, second part) must map to the same synset in info/queries_synsets_map.txt ('<query>
    <synset>', 1-based), as the reference asserts; images below subset118/."""
    info = os.path.join(webvision, "info")
    synsets = [line[:9] for line in read_lines(need_file(os.path.join(info, "synsets.txt"), WEBVISION_FIX),
                                               WEBVISION_FIX) if line.strip()]
    map_path = need_file(os.path.join(info, "queries_synsets_map.txt"), WEBVISION_FIX)
    query_synset = {}
    for number, (query, synset) in read_table(map_path, 2, "<query id> <synset id>", WEBVISION_FIX):
        if not (query.isdigit() and synset.isdigit()):
            raise UserError(f"{map_path} line {number} is '{query} {synset}'; expected two numbers")
        query_synset[int(query)] = int(synset) - 1
    path = need_file(os.path.join(webvision, "train_files_118.txt"), WEBVISION_FIX)
    wanted, items = set(classes), []
    for number, (rel, synset) in read_table(path, 2, "<image path> <synset index>", WEBVISION_FIX):
        parts = rel.split("/")
        if not synset.isdigit() or int(synset) >= len(synsets) or len(parts) < 3 or not parts[1][1:].isdigit():
            raise UserError(f"{path} line {number} is '{rel} {synset}'; expected '<source>/q<query>/<file> <synset "
                            f"index below {len(synsets)}>'")
        wnid, query_id = synsets[int(synset)], int(parts[1][1:])
        if query_id not in query_synset:
            raise UserError(f"query {parts[1]} of {path} line {number} has no synset in {map_path}; use the "
                            f"WebVision release's info/ files")
        if query_synset[query_id] >= len(synsets) or synsets[query_synset[query_id]] != wnid:
            raise UserError(f"query {parts[1]} of {path} line {number} maps to another synset in {map_path} than the "
                            f"line's {wnid}; use the WebVision release's info/ files")
        if wnid in wanted:
            image = os.path.join(webvision, "subset118", rel)
            if not os.path.isfile(image):
                raise UserError(f"web image {image} ({path} line {number}) is missing; extract the 118-class subset "
                                f"into subset118/")
            items.append((wnid, image, rel))
    return items


def weakshot_webvision(imagenet: str, webvision: str, out_dir: str, novel_split: int = WEBVISION_NOVEL
                       ) -> Dict[str, dict]:
    """SimTrans's WebVision setting: the first 118 WNIDs of ImageNet's train/ in sorted order novel,
    the other 882 base; base images: ImageNet training images (train_files.txt), novel training
    images: WebVision's web images of those synsets (train_files_118.txt), test images: ImageNet's
    validation images of either (ground truth + meta.mat). novel_train.json holds ImageNet's own
    training images of the novel classes (ours: the reference has no clean novel set here)."""
    imagenet, webvision = dataset_folder(imagenet), dataset_folder(webvision)
    base_classes, novel_classes = webvision_classes(imagenet, novel_split)
    train = imagenet_train(imagenet, base_classes + novel_classes)
    val = imagenet_val(imagenet, base_classes + novel_classes)
    web = webvision_web(webvision, novel_classes)
    base, novel_train = split_by_classes(train, base_classes, novel_classes)
    base_test, novel_test = split_by_classes(val, base_classes, novel_classes)
    info = {"layout": "webvision", "source": [imagenet, webvision], "novel_split": len(novel_classes)}
    return write_weakshot(out_dir, base, base_test, web, novel_test, info, novel_train=novel_train)


def weakshot_folders(train_dir: str, test_dir: str, web_dir: str, out_dir: str,
                  novel_classes_file: Optional[str] = None) -> Dict[str, dict]:
    """Folder-per-class layouts (e.g. Stanford Cars in class folders, WebVision-style crawls):
    clean `train_dir` and `test_dir`, web images in `web_dir`; novel classes from a file (one per
    line) or, like SimTrans's Car split, every 4th of the sorted classes of `train_dir`."""
    folders = [dataset_folder(d) for d in (train_dir, test_dir, web_dir)]
    classes = subfolders(folders[0])
    if novel_classes_file:
        novel = read_class_list(novel_classes_file)
        base = [c for c in classes if c not in set(novel)]
    else:
        base, novel = every_fourth(classes)

    def clean(folder: str, names: Sequence[str]) -> List[Item]:
        return [(cls, p, os.path.relpath(p, folder)) for cls in names
                for p in list_images(need_folder(os.path.join(folder, cls), f"class {cls!r} needs a folder there"))]
    info = {"layout": "folder", "source": folders}
    return write_weakshot(out_dir, clean(folders[0], base), clean(folders[1], base),
                          web_items(folders[2], novel, folders[2]), clean(folders[1], novel), info,
                          novel_train=clean(folders[0], novel))


# ---------------------------------------------------------------- command line

def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m data.weakshot", description="Build a weak-shot folder for SimTrans.")
    layouts = parser.add_subparsers(dest="layout", required=True)
    inject = layouts.add_parser("inject", help="benchmark from a labelled dataset with injected outliers")
    inject.add_argument("--data_path", required=True, help="dataset with base/val/novel.json or train/val/test.csv")
    inject.add_argument("--outlier_fraction", type=float, default=0.3,
                        help="share of each novel class's web images that are outliers")
    inject.add_argument("--open_set_share", type=float, default=0.5,
                        help="share of the outliers taken from the val classes (the rest: other novel classes)")
    inject.add_argument("--test_per_class", type=int, default=20, help="clean test images per novel class")
    inject.add_argument("--base_test_per_class", type=int, default=10, help="test images per base class")
    inject.add_argument("--seed", type=int, default=0)
    inject.add_argument("--novel_classes", default=None,
                        help="file of novel class names (e.g. SimTrans's cub_simtrans/testclasses.txt); then the "
                             "other val classes are outside the split and the other train/test classes base")
    oracle = layouts.add_parser("oracle", help="a benchmark without its injected outliers (the upper bound)")
    oracle.add_argument("--data_path", required=True, help="a weak-shot folder written by inject")
    cub = layouts.add_parser("cub", help="CUB-200-2011 + CUB_web")
    cub.add_argument("--data_path", required=True, help="folder holding CUB_200_2011/ and CUB_web/")
    cub.add_argument("--split_dir", default=None, help="folder of trainvalclasses.txt and testclasses.txt")
    cub.add_argument("--exclude", default=None, help="text file of web images to drop (e.g. duplicates)")
    aircraft = layouts.add_parser("aircraft", help="FGVC-Aircraft + hardest_new_set")
    aircraft.add_argument("--data_path", required=True, help="folder holding fgvc-aircraft-2013b/ and hardest_new_set/")
    cars = layouts.add_parser("cars", help="CompCars + web_data")
    cars.add_argument("--data_path", required=True, help="folder holding CampCar/ and web_data/")
    cars.add_argument("--novel_split", type=int, default=-1,
                      help="-1: every 4th sorted web folder novel (the reference's default); n: the first n models of "
                           "the reference's explicit list of 431 novel, its others base")
    webvision = layouts.add_parser("webvision", help="ImageNet (clean base) + WebVision 2.0 (web images of the novel)")
    webvision.add_argument("--imagenet", required=True,
                           help="ImageNet folder: train/<WNID>/, train_files.txt, val/, "
                                "ILSVRC2012_validation_ground_truth.txt, meta.mat")
    webvision.add_argument("--webvision", required=True,
                           help="WebVision folder: train_files_118.txt, info/queries_synsets_map.txt, "
                                "info/synsets.txt, subset118/<image path>")
    webvision.add_argument("--novel_split", type=int, default=WEBVISION_NOVEL,
                           help="the first n sorted WNIDs are novel (the reference: 118, its only split)")
    folder = layouts.add_parser("folder", help="class folders: clean train/, test/ and web/")
    folder.add_argument("--train_dir", required=True)
    folder.add_argument("--test_dir", required=True)
    folder.add_argument("--web_dir", required=True)
    folder.add_argument("--novel_classes", default=None, help="file of novel class names (default: every 4th)")
    for sub in (inject, oracle, cub, aircraft, cars, webvision, folder):
        sub.add_argument("--out_dir", required=True, help="the weak-shot folder to write")
    return parser.parse_args(argv)


def build(args: argparse.Namespace) -> Dict[str, dict]:
    if args.layout == "inject":
        return build_benchmark(args.data_path, args.out_dir, args.outlier_fraction, args.open_set_share,
                               args.test_per_class, args.base_test_per_class, args.seed, args.novel_classes)
    if args.layout == "oracle":
        return write_oracle(args.data_path, args.out_dir)
    if args.layout == "cub":
        return weakshot_cub(args.data_path, args.out_dir, args.split_dir, args.exclude)
    if args.layout == "aircraft":
        return weakshot_aircraft(args.data_path, args.out_dir)
    if args.layout == "cars":
        return weakshot_cars(args.data_path, args.out_dir, args.novel_split)
    if args.layout == "webvision":
        return weakshot_webvision(args.imagenet, args.webvision, args.out_dir, args.novel_split)
    return weakshot_folders(args.train_dir, args.test_dir, args.web_dir, args.out_dir, args.novel_classes)


@exit_on_user_error
def main(argv: Optional[List[str]] = None) -> None:
    """Build the folder and print one line per filelist."""
    args = parse_args(argv)
    lists = build(args)
    print(f"weak-shot folder written to {os.path.abspath(args.out_dir)} (fingerprint {fingerprint(args.out_dir)})")
    for name, meta in lists.items():
        print(f"{name}: {len(meta['label_names'])} classes, {len(meta['image_names'])} images")
    injected = injected_files(args.out_dir)
    if injected is not None:
        web = len(lists["web.json"]["image_names"])
        print(f"injected.json: {len(injected)} of the {web} web images are outliers ({len(injected) / web:.1%})")


if __name__ == "__main__":
    main()
