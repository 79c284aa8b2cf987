"""Writers of the filelists base.json, val.json and novel.json (format: `data/datasets.py`).

Every layout is read into three `Split`s (train → base.json, val → val.json, test → novel.json),
each a list of (class name, absolute image path, file name) items. Everything is checked first
(folders, files, CSV headers, every image, no empty split, no class in two splits); only then
are bounding-box crops saved and the three files written, each to a temporary file renamed into
place at the end, so a failed run leaves earlier filelists untouched.

Conventions shared by all writers:
- labels 0..C-1 follow the sorted class names of the split; images are ordered by label, then by
  file name (the order of FRN's `ImageFolder` datasets);
- `image_names` are absolute paths (symbolic links are kept, not resolved);
- `file_names` name each image as the dataset's own listing does: the `filename` column for CSV
  layouts and the FEAT CUB split, the original image file name for CUB-200-2011 and FGVC-Aircraft
  (also for their cropped copies, so episodes compare across raw and cropped images), and the
  path relative to the dataset folder for folder-per-class datasets.
"""
import csv
import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from PIL import Image

from data.datasets import SPLIT_FILES
from utils.errors import UserError

SPLITS = ("train", "val", "test")
CSV_HEADER = "filename,label"
#: folders of the fewshot_splits archive holding the class lists of CIFAR-FS and FC100
SPLIT_SUBFOLDERS = {"cifar_fs": "cifar_fs_bertinetto", "fc100": "fc100_oreshkin"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")

Item = Tuple[str, str, str]            # (class name, absolute image path, file name)
Box = Tuple[float, float, float, float]  # (left, upper, right, lower) in pixels


@dataclass
class Split:
    """The images of one split, and where they were listed (named in error messages)."""
    name: str
    source: str
    items: List[Item] = field(default_factory=list)

    @property
    def classes(self) -> List[str]:
        return sorted({cls for cls, _, _ in self.items})


@dataclass
class Crop:
    """A bounding-box crop of `source` to save as `target` before the filelists are written."""
    source: str
    box: Box
    target: str


@dataclass
class Photo:
    """An image of a dataset that indexes images by id (CUB-200-2011, FGVC-Aircraft)."""
    image_id: str
    class_name: str
    path: str        # absolute path of the original image
    crop_name: str   # path of its cropped copy, relative to the crop folder


# ---------------------------------------------------------------- building and writing filelists

def build_filelist(split: Split) -> dict:
    """The filelist dict of `split`: labels by sorted class name, images by label then file name."""
    label_of = {name: label for label, name in enumerate(split.classes)}
    items = sorted(split.items, key=lambda item: (label_of[item[0]], item[2]))
    return {"label_names": split.classes,
            "image_names": [path for _, path, _ in items],
            "image_labels": [label_of[cls] for cls, _, _ in items],
            "file_names": [name for _, _, name in items]}


def check_splits(splits: Sequence[Split]) -> None:
    """One-line errors for an empty split or a class that is in two splits."""
    owner: Dict[str, Split] = {}
    for split in splits:
        if not split.items:
            raise UserError(f"the {split.name} split is empty: {split.source} gives no images; "
                            f"list its images or classes there")
        for cls in split.classes:
            if cls in owner:
                raise UserError(f"class {cls!r} is in both the {owner[cls].name} split ({owner[cls].source}) "
                                f"and the {split.name} split ({split.source}); splits must not share "
                                f"classes, remove it from one of them")
            owner[cls] = split


def write_filelists(splits: Sequence[Split], out_dir: str, crops: Sequence[Crop] = ()) -> Dict[str, dict]:
    """Check `splits`, save `crops`, then write base/val/novel.json into `out_dir`.

    Returns {json path: filelist}."""
    check_splits(splits)
    out_dir = os.path.abspath(out_dir)
    lists = {os.path.join(out_dir, SPLIT_FILES[split.name]): build_filelist(split) for split in splits}
    make_folder(out_dir)
    save_crops(crops)
    write_json_files(lists)
    return lists


def make_folder(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the output folder {path} ({err}); "
                        f"pass a writable --out_dir") from None


def write_json_files(lists: Dict[str, dict]) -> None:
    """Write every file to a temporary name first, then rename them all into place."""
    temps = {path: f"{path}.{os.getpid()}.tmp" for path in lists}
    try:
        for path, meta in lists.items():
            with open(temps[path], "w") as f:
                json.dump(meta, f)
        for path, temp in temps.items():
            os.replace(temp, path)
    except OSError as err:
        raise UserError(f"cannot write {err.filename or 'the filelists'} ({err.strerror or err}); "
                        f"check that the output folder is writable") from None
    finally:
        for temp in temps.values():
            if os.path.exists(temp):
                os.remove(temp)


def save_crops(crops: Sequence[Crop]) -> None:
    """Save each crop as an RGB image (format from the target's extension)."""
    for crop in crops:
        try:
            os.makedirs(os.path.dirname(crop.target), exist_ok=True)
            with Image.open(crop.source) as image:
                image.convert("RGB").crop(crop.box).save(crop.target)
        except OSError as err:
            raise UserError(f"cannot crop {crop.source} into {crop.target} ({err}); replace the image "
                            f"or pass a writable --out_dir") from None


# ---------------------------------------------------------------- reading inputs

def dataset_folder(data_path: str) -> str:
    """The absolute path of the dataset folder, or a one-line error."""
    if not data_path or not os.path.isdir(data_path):
        raise UserError(f"--data_path {data_path!r} is not a folder; point it at the dataset folder")
    return os.path.abspath(data_path)


def need_folder(path: str, fix: str) -> str:
    if not os.path.isdir(path):
        raise UserError(f"folder {path} is missing; {fix}")
    return path


def need_image(path: str, source: str) -> None:
    if not os.path.isfile(path):
        raise UserError(f"image {path} listed in {source} is missing; re-extract the dataset or "
                        f"remove the image from that list")


def read_lines(path: str, fix: str) -> List[str]:
    """The lines of a text file (without line ends), or a one-line error naming it."""
    if not os.path.isfile(path):
        raise UserError(f"file {path} is missing; {fix}")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            return f.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"file {path} is not a readable text file ({err}); {fix}") from None


def read_csv_rows(path: str, fix: str) -> Tuple[str, List[Tuple[int, List[str]]]]:
    """The header line of a CSV file and its non-blank rows as (line number, stripped fields)."""
    lines = read_lines(path, fix)
    header = lines[0].strip() if lines else ""
    rows = [(number, [value.strip() for value in row])
            for number, row in enumerate(csv.reader(lines[1:]), start=2)
            if any(value.strip() for value in row)]
    return header, rows


def read_table(path: str, columns: int, expected: str, fix: str) -> List[Tuple[int, List[str]]]:
    """Rows of a whitespace-separated table; the last column may contain spaces."""
    rows = []
    for number, line in enumerate(read_lines(path, fix), start=1):
        fields = line.strip().split(None, columns - 1)
        if not fields:
            continue
        if len(fields) != columns:
            raise UserError(f"{path} line {number} is {line!r}; expected {expected!r}")
        rows.append((number, fields))
    return rows


def parse_numbers(path: str, number: int, values: Sequence[str]) -> List[float]:
    try:
        return [float(value) for value in values]
    except ValueError:
        raise UserError(f"{path} line {number} has a non-numeric box {' '.join(values)!r}; "
                        f"restore the dataset's original file") from None


def read_class_list(path: str) -> List[str]:
    """Class names of a split file, one per line (blank lines skipped, repeats dropped)."""
    fix = "pass the class-name files with --split_dir or --train_classes/--val_classes/--test_classes"
    lines = (line.strip() for line in read_lines(path, fix))
    names = list(dict.fromkeys(line for line in lines if line))
    if not names:
        raise UserError(f"split file {path} lists no classes; put one class name per line")
    return names


def split_files(split_dir: str, subfolder: str, ext: str) -> Dict[str, str]:
    """{split: path} of train/val/test.<ext> in `split_dir`, or in its `subfolder` (so the root of
    the fewshot_splits archive works too)."""
    folders = [split_dir] + ([os.path.join(split_dir, subfolder)] if subfolder else [])
    for folder in folders:
        if os.path.isfile(os.path.join(folder, f"train.{ext}")):
            return {split: os.path.join(folder, f"{split}.{ext}") for split in SPLITS}
    where = " or ".join(folders)
    raise UserError(f"no train.{ext} in {where}; pass --split_dir pointing at the folder of the split files "
                    f"(train.{ext}, val.{ext}, test.{ext})"
                    + (" or --train_classes/--val_classes/--test_classes" if ext == "txt" else ""))


# ---------------------------------------------------------------- mini-ImageNet CSV layout

CSV_FIX = ("expected the mini-ImageNet layout (images/ + train.csv, val.csv, test.csv); "
           "point --data_path at that folder")


def csv_folder(data_path: str) -> str:
    """Where the split CSVs of a CSV layout are: `data_path` itself, or its split/ folder (DeepEMD's
    mini-ImageNet release: images/ + split/train.csv, val.csv, test.csv)."""
    nested = os.path.join(data_path, "split")
    if not os.path.isfile(os.path.join(data_path, "train.csv")) and os.path.isfile(os.path.join(nested, "train.csv")):
        return nested
    return data_path


def has_csv_layout(data_path: str) -> bool:
    """Whether `data_path` holds the mini-ImageNet CSV layout (judged by train.csv, beside images/
    or in split/)."""
    return os.path.isfile(os.path.join(csv_folder(data_path), "train.csv"))


def read_split_csv(root: str, split: str) -> Split:
    """One split of the CSV layout: `<split>.csv` rows `filename,label` of images in `images/`."""
    path = os.path.join(csv_folder(root), f"{split}.csv")
    header, rows = read_csv_rows(path, CSV_FIX)
    if header != CSV_HEADER:
        found = repr(header) if header else "no header (empty file)"
        raise UserError(f"{path} has header {found}; expected {CSV_HEADER!r} "
                        f"(image file inside images/, class name), fix its first line")
    items = []
    for number, fields in rows:
        if len(fields) != 2 or not all(fields):
            raise UserError(f"{path} line {number} is {','.join(fields)!r}; expected '<image file>,<class>'")
        name, cls = fields
        image = os.path.join(root, "images", name)
        need_image(image, f"{path} line {number}")
        items.append((cls, image, name))
    return Split(split, path, items)


def write_csv_layout(data_path: str, out_dir: Optional[str] = None) -> Dict[str, dict]:
    """Filelists of the mini-ImageNet CSV layout (also the shared CIFAR-FS, FC100, CUB and
    Omniglot archives): `images/` plus train.csv, val.csv, test.csv with header filename,label."""
    root = dataset_folder(data_path)
    need_folder(os.path.join(root, "images"), CSV_FIX)
    splits = [read_split_csv(root, split) for split in SPLITS]
    return write_filelists(splits, out_dir or root)


# ---------------------------------------------------------------- folder-per-class datasets

def list_images(folder: str) -> List[str]:
    """Image files below `folder` (recursively, hidden entries skipped), sorted."""
    found = []
    for parent, subfolders, files in os.walk(folder, followlinks=True):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        found += [os.path.join(parent, name) for name in files
                  if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def class_folder_split(split: str, source: str, classes: Sequence[str], image_root: str, root: str) -> Split:
    """A split made of the class folders `image_root/<class>`; file names relative to `root`."""
    items = []
    for cls in classes:
        folder = os.path.join(image_root, cls)
        if not os.path.isdir(folder):
            raise UserError(f"class {cls!r} listed in {source} has no folder {folder}; fix the class name "
                            f"or pass the folder holding the class folders with --image_dir")
        images = list_images(folder)
        if not images:
            raise UserError(f"class folder {folder} has no image files (.jpg, .png, ...); add them "
                            f"or remove {cls!r} from {source}")
        items += [(cls, path, os.path.relpath(path, root)) for path in images]
    return Split(split, source, items)


def find_image_root(root: str, classes: Sequence[str], image_dir: Optional[str] = None) -> str:
    """The folder holding the class folders: `image_dir` if given, else the first of `root`,
    `root/data`, `root/images` that holds a folder of one of `classes`."""
    if image_dir:
        fix = "pass --image_dir the folder holding the class folders"
        return os.path.abspath(need_folder(image_dir, fix))
    candidates = [root, os.path.join(root, "data"), os.path.join(root, "images")]
    for folder in candidates:
        if any(os.path.isdir(os.path.join(folder, cls)) for cls in classes):
            return folder
    return root


def write_class_folders(data_path: str, class_files: Optional[Dict[str, str]] = None,
                        split_dir: Optional[str] = None, subfolder: str = "", out_dir: Optional[str] = None,
                        image_dir: Optional[str] = None) -> Dict[str, dict]:
    """Filelists of a folder-per-class dataset (class folders in the dataset folder, in its data/
    or images/ subfolder, or in `image_dir`) split by files of class names: `class_files`
    {split: path}, else train/val/test.txt of `split_dir` or of its `subfolder` (see
    SPLIT_SUBFOLDERS), else those of the dataset folder."""
    root = dataset_folder(data_path)
    class_files = class_files or split_files(split_dir or root, subfolder, "txt")
    classes = {split: read_class_list(class_files[split]) for split in SPLITS}
    image_root = find_image_root(root, [cls for names in classes.values() for cls in names], image_dir)
    splits = [class_folder_split(split, class_files[split], classes[split], image_root, root)
              for split in SPLITS]
    return write_filelists(splits, out_dir or root)


def split_folder(root: str, split: str, fix: str) -> Split:
    """The images of `root/<split>/<class>/` (class folders in sorted order, FRN's ImageFolder)."""
    folder = need_folder(os.path.join(root, split), fix)
    classes = sorted(name for name in os.listdir(folder)
                     if not name.startswith(".") and os.path.isdir(os.path.join(folder, name)))
    return class_folder_split(split, folder, classes, folder, root)


def write_tiered_imagenet(data_path: str, out_dir: Optional[str] = None) -> Dict[str, dict]:
    """Filelists of tiered-ImageNet laid out as train/, val/, test/ folders of class folders (also
    DeepEMD's FC100 release)."""
    root = dataset_folder(data_path)
    fix = "this layout needs train/, val/ and test/ folders of class folders in --data_path"
    return write_filelists([split_folder(root, split, fix) for split in SPLITS], out_dir or root)


def has_split_folders(data_path: str) -> bool:
    """Whether `data_path` holds train/, val/ and test/ folders (tiered-ImageNet, DeepEMD's FC100)."""
    return all(os.path.isdir(os.path.join(data_path, split)) for split in SPLITS)


def write_meta_inat(data_path: str, out_dir: Optional[str] = None) -> Dict[str, dict]:
    """Filelists of meta-iNat or tiered meta-iNat as FRN's data/init_meta_iNat.py lays them out:
    train/<category id>/ and test/<category id>/ of 84x84 images (or links to them). There is no
    validation split: FRN trains these rows with --no_val, validating on the test classes and
    keeping the final model, so val.json lists the test classes too."""
    root = dataset_folder(data_path)
    fix = "meta-iNat needs the train/ and test/ folders of class folders that FRN's init_meta_iNat.py writes"
    train, test = split_folder(root, "train", fix), split_folder(root, "test", fix)
    check_splits([train, test])
    out_dir = os.path.abspath(out_dir or root)
    lists = {os.path.join(out_dir, SPLIT_FILES[name]): build_filelist(split)
             for name, split in (("train", train), ("val", test), ("test", test))}
    make_folder(out_dir)
    write_json_files(lists)
    return lists


def filelist_items(folder: str, name: str) -> List[Item]:
    """The (class, image, file name) items of `folder/<name>`, a filelist written before."""
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise UserError(f"{path} is missing; write that dataset's filelists first (write_miniImagenet_filelist.py)")
    try:
        with open(path) as f:
            meta = json.load(f)
        names = meta.get("file_names") or [os.path.basename(p) for p in meta["image_names"]]
        return [(meta["label_names"][label], image, file)
                for label, image, file in zip(meta["image_labels"], meta["image_names"], names)]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise UserError(f"{path} is not a readable filelist ({type(err).__name__}); rewrite it") from None


def write_cross_domain(base_from: str, eval_from: str, out_dir: str) -> Dict[str, dict]:
    """A cross-domain folder (the Negative-Margin code's mini2CUB): base.json holds every class of
    `base_from`'s base.json, val.json and novel.json (its all.json), val.json and novel.json are
    `eval_from`'s, as written there."""
    base_from, eval_from = dataset_folder(base_from), dataset_folder(eval_from)
    base_items = [item for name in ("base.json", "val.json", "novel.json") for item in filelist_items(base_from, name)]
    splits = [Split("train", f"{base_from} (base.json, val.json, novel.json)", base_items),
              Split("val", os.path.join(eval_from, "val.json"), filelist_items(eval_from, "val.json")),
              Split("test", os.path.join(eval_from, "novel.json"), filelist_items(eval_from, "novel.json"))]
    return write_filelists(splits, out_dir)


# ---------------------------------------------------------------- datasets indexed by image id

def frn_split(index: int) -> str:
    """FRN's class split by class index: even → train, 1 mod 4 → val, 3 mod 4 → test."""
    return "train" if index % 2 == 0 else ("val" if index % 4 == 1 else "test")


def closerlook_split(position: int) -> str:
    """CloserLookFewShot's CUB split (also the Negative-Margin code's and mmfewshot's CUBDataset) by
    the 0-based position of the class folder in sorted order: even → train (base), 1 mod 4 → val,
    3 mod 4 → test (novel). On CUB-200-2011, position = class id - 1, so this is FRN's rule
    shifted by one: FRN's novel classes are CloserLook's base classes."""
    return frn_split(position)


def photo_splits(chosen: Dict[str, Tuple[str, List[Photo]]], crop_dir: Optional[str],
                 boxes: Dict[str, Box], box_source: str) -> Tuple[List[Split], List[Crop]]:
    """Splits of the chosen photos {split: (source, photos)}, pointing at cropped copies inside
    `crop_dir` (with the crops to save) when it is given."""
    splits, crops = [], []
    for split in SPLITS:
        source, photos = chosen[split]
        items = []
        for photo in photos:
            need_image(photo.path, source)
            image = photo.path
            if crop_dir:
                if photo.image_id not in boxes:
                    raise UserError(f"image id {photo.image_id} ({photo.path}) has no bounding box in "
                                    f"{box_source}; restore the dataset's original file")
                image = os.path.join(crop_dir, photo.crop_name)
                crops.append(Crop(photo.path, boxes[photo.image_id], image))
            items.append((photo.class_name, image, os.path.basename(photo.path)))
        splits.append(Split(split, source, items))
    return splits, crops


def crop_folder(crop_dir: Optional[str], *dataset_folders: str) -> Optional[str]:
    if crop_dir and os.path.abspath(crop_dir) in dataset_folders:
        raise UserError(f"--out_dir {crop_dir} is the dataset folder; the cropped copies need a folder of "
                        f"their own, pass another --out_dir")
    return os.path.abspath(crop_dir) if crop_dir else None


# ---------------------------------------------------------------- CUB-200-2011

CUB_FIX = ("point --data_path at the CUB_200_2011 folder (images/, images.txt, classes.txt, "
           "bounding_boxes.txt) or at a folder with train.csv, val.csv, test.csv")


def cub_photo(root: str, image_id: str, rel_path: str) -> Photo:
    return Photo(image_id, rel_path.split("/")[0], os.path.join(root, "images", rel_path),
                 os.path.join("images", os.path.splitext(rel_path)[0] + ".png"))


def cub_index(root: str) -> Dict[str, str]:
    """images.txt as {path inside images/ ('<class folder>/<file>'): image id}."""
    rows = read_table(os.path.join(root, "images.txt"), 2, "<image id> <class folder>/<file>", CUB_FIX)
    return {fields[1]: fields[0] for _, fields in rows}


def cub_train_test(root: str) -> Dict[str, bool]:
    """train_test_split.txt as {image id: whether the official split puts it in training}."""
    rows = read_table(os.path.join(root, "train_test_split.txt"), 2, "<image id> <0|1>", CUB_FIX)
    return {image_id: flag == "1" for _, (image_id, flag) in rows}


def cub_frn_photos(root: str, index: Dict[str, str]) -> Dict[str, Tuple[str, List[Photo]]]:
    """FRN's CUB split by class id of classes.txt (even → train, 1 mod 4 → val, 3 mod 4 → test)."""
    path = os.path.join(root, "classes.txt")
    class_ids = {}
    for number, (class_id, name) in read_table(path, 2, "<class id> <class folder>", CUB_FIX):
        if not class_id.isdigit():
            raise UserError(f"{path} line {number} has class id {class_id!r}; expected a number")
        class_ids[name] = int(class_id)
    chosen: Dict[str, Tuple[str, List[Photo]]] = {split: (f"{path} (FRN split)", []) for split in SPLITS}
    for rel_path, image_id in index.items():
        photo = cub_photo(root, image_id, rel_path)
        if photo.class_name not in class_ids:
            raise UserError(f"image {rel_path} of images.txt is in class folder {photo.class_name!r}, "
                            f"which {path} does not list; restore the dataset's original files")
        chosen[frn_split(class_ids[photo.class_name])][1].append(photo)
    return chosen


def cub_closerlook_photos(root: str, index: Dict[str, str]) -> Dict[str, Tuple[str, List[Photo]]]:
    """CloserLookFewShot's CUB split: the class folders of images/ in sorted order, position i
    (0-based) even → train, 1 mod 4 → val, 3 mod 4 → test (its write_CUB_filelist.py)."""
    images = need_folder(os.path.join(root, "images"), CUB_FIX)
    folders = sorted(name for name in os.listdir(images)
                     if not name.startswith(".") and os.path.isdir(os.path.join(images, name)))
    position = {name: i for i, name in enumerate(folders)}
    source = f"{images} (CloserLook split: sorted class folders)"
    chosen: Dict[str, Tuple[str, List[Photo]]] = {split: (source, []) for split in SPLITS}
    for rel_path, image_id in index.items():
        photo = cub_photo(root, image_id, rel_path)
        if photo.class_name not in position:
            raise UserError(f"image {rel_path} of images.txt is in class folder {photo.class_name!r}, which "
                            f"{images} does not hold; restore the dataset's original files")
        chosen[closerlook_split(position[photo.class_name])][1].append(photo)
    return chosen


def cub_feat_photos(root: str, index: Dict[str, str], split_dir: str) -> Dict[str, Tuple[str, List[Photo]]]:
    """The FEAT/DeepEMD CUB split: cub_feat/{train,val,test}.csv rows 'filename, label, ...'."""
    chosen = {}
    for split, path in split_files(split_dir, "cub_feat", "csv").items():
        header, rows = read_csv_rows(path, "pass --split_dir the folder of the FEAT cub split CSVs")
        if [name.strip() for name in header.split(",")][:2] != ["filename", "label"]:
            raise UserError(f"{path} has header {header!r}; expected the FEAT split header "
                            f"'filename, label, concept_label' (cub_feat/*.csv)")
        photos = []
        for number, fields in rows:
            if len(fields) < 2 or not all(fields[:2]):
                raise UserError(f"{path} line {number} is {','.join(fields)!r}; expected "
                                f"'<image file>,<class folder>,...'")
            rel_path = f"{fields[1]}/{fields[0]}"
            if rel_path not in index:
                raise UserError(f"image {rel_path} ({path} line {number}) is not in "
                                f"{os.path.join(root, 'images.txt')}; {CUB_FIX}")
            photos.append(cub_photo(root, index[rel_path], rel_path))
        chosen[split] = (path, photos)
    return chosen


def cub_boxes(root: str) -> Dict[str, Box]:
    """bounding_boxes.txt as {image id: (left, upper, right, lower)}."""
    path = os.path.join(root, "bounding_boxes.txt")
    boxes = {}
    for number, (image_id, *values) in read_table(path, 5, "<image id> <x> <y> <width> <height>", CUB_FIX):
        x, y, width, height = parse_numbers(path, number, values)
        boxes[image_id] = (x, y, x + width, y + height)
    return boxes


#: the CUB class splits of `write_cub`
CUB_SPLITS = ("frn", "closerlook", "feat")


def write_cub(data_path: str, split: str = "frn", split_dir: Optional[str] = None,
              crop_dir: Optional[str] = None, out_dir: Optional[str] = None) -> Dict[str, dict]:
    """Filelists of CUB-200-2011 in its official layout with the FRN split (1-based class id even →
    train), the CloserLook split (`split='closerlook'`: 0-based sorted position even → train; the
    Negative-Margin code's and mmfewshot's) or the FEAT/DeepEMD split read from `split_dir`
    (`split='feat'`). With `crop_dir`, bounding-box crops are saved there as
    images/<class folder>/<name>.png (FRN's "CUB cropped") and the filelists, written to
    `out_dir` or `crop_dir`, point at them."""
    if split not in CUB_SPLITS:
        raise UserError(f"--split {split!r} is not a CUB split; pick one of {', '.join(CUB_SPLITS)}")
    root = dataset_folder(data_path)
    crop_dir = crop_folder(crop_dir, root)
    index = cub_index(root)
    if split == "feat":
        chosen = cub_feat_photos(root, index, split_dir or root)
    elif split == "closerlook":
        chosen = cub_closerlook_photos(root, index)
    else:
        chosen = cub_frn_photos(root, index)
    boxes = cub_boxes(root) if crop_dir else {}
    splits, crops = photo_splits(chosen, crop_dir, boxes, os.path.join(root, "bounding_boxes.txt"))
    return write_filelists(splits, out_dir or crop_dir or root, crops)


# ---------------------------------------------------------------- FGVC-Aircraft

AIRCRAFT_FIX = ("point --data_path at fgvc-aircraft-2013b (or its data/ folder: images/, variants.txt, "
                "images_variant_trainval.txt, images_variant_test.txt, images_box.txt)")


def aircraft_root(data_path: str) -> Optional[str]:
    """The folder of the official FGVC-Aircraft files (data_path or data_path/data), if any."""
    for folder in (os.path.join(data_path, "data"), data_path):
        if os.path.isfile(os.path.join(folder, "variants.txt")):
            return os.path.abspath(folder)
    return None


def aircraft_photos(root: str) -> Dict[str, Tuple[str, List[Photo]]]:
    """FRN's Aircraft split: variants.txt index i even → train, 1 mod 4 → val, 3 mod 4 → test,
    over the pooled images of images_variant_trainval.txt and images_variant_test.txt."""
    variants = {name: i for i, name in enumerate(aircraft_variants(root))}
    source = f"{os.path.join(root, 'variants.txt')} (FRN split)"
    chosen: Dict[str, Tuple[str, List[Photo]]] = {split: (source, []) for split in SPLITS}
    for part in ("trainval", "test"):
        for image_id, variant in aircraft_variant_images(root, part, variants):
            photo = Photo(image_id, variant, os.path.join(root, "images", f"{image_id}.jpg"),
                          os.path.join("images", f"{image_id}.png"))
            chosen[frn_split(variants[variant])][1].append(photo)
    return chosen


def aircraft_variants(root: str) -> List[str]:
    """The variant names of variants.txt, in its order."""
    return [line.strip() for line in read_lines(os.path.join(root, "variants.txt"), AIRCRAFT_FIX) if line.strip()]


def aircraft_variant_images(root: str, part: str, variants) -> List[Tuple[str, str]]:
    """(image id, variant) rows of images_variant_<part>.txt (part: trainval or test), each
    variant checked against `variants`."""
    path = os.path.join(root, f"images_variant_{part}.txt")
    rows = []
    for number, (image_id, variant) in read_table(path, 2, "<image id> <variant>", AIRCRAFT_FIX):
        if variant not in variants:
            raise UserError(f"{path} line {number} names variant {variant!r}, which "
                            f"{os.path.join(root, 'variants.txt')} does not list; restore the dataset's original files")
        rows.append((image_id, variant))
    return rows


def aircraft_boxes(root: str) -> Dict[str, Box]:
    """images_box.txt as {image id: (xmin, ymin, xmax, ymax)}."""
    path = os.path.join(root, "images_box.txt")
    return {image_id: _box(parse_numbers(path, number, values)) for number, (image_id, *values)
            in read_table(path, 5, "<image id> <xmin> <ymin> <xmax> <ymax>", AIRCRAFT_FIX)}


def _box(numbers: Sequence[float]) -> Box:
    """The four numbers of a row of images_box.txt as a Box."""
    left, upper, right, lower = numbers
    return left, upper, right, lower


def write_aircraft(data_path: str, crop_dir: Optional[str] = None,
                   out_dir: Optional[str] = None) -> Dict[str, dict]:
    """Filelists of FGVC-Aircraft in its official layout with FRN's 50/25/25 variant split. With
    `crop_dir`, bounding-box crops are saved there as images/<image id>.png and the filelists,
    written to `out_dir` or `crop_dir`, point at them."""
    folder = dataset_folder(data_path)
    root = aircraft_root(folder)
    if root is None:
        raise UserError(f"no variants.txt in {folder} or {os.path.join(folder, 'data')}; {AIRCRAFT_FIX}")
    crop_dir = crop_folder(crop_dir, folder, root)
    chosen = aircraft_photos(root)
    boxes = aircraft_boxes(root) if crop_dir else {}
    splits, crops = photo_splits(chosen, crop_dir, boxes, os.path.join(root, "images_box.txt"))
    return write_filelists(splits, out_dir or crop_dir or folder, crops)
