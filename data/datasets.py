"""Datasets read from filelists.

A filelist is a JSON file (CloserLookFewShot convention) written by `data/filelists.py`:
  {"label_names": [class name, ...],          # label i is label_names[i]
   "image_names": [absolute image path, ...],
   "image_labels": [int label, ...],          # 0 .. len(label_names)-1
   "file_names": [name as in the dataset's CSV / relative path, ...]}   # optional
The three splits live next to the data as base.json, val.json and novel.json.
"""
import json
import os
from typing import Callable, List, Optional

import numpy as np
import paddle
from PIL import Image

from utils.errors import UserError

SPLIT_FILES = {"base": "base.json", "train": "base.json", "val": "val.json",
               "novel": "novel.json", "test": "novel.json",
               # weak-shot folders (data/weakshot.py): novel classes' web images, base classes' test images,
               # and where the data has them novel classes' clean training images, base classes' web images
               "web": "web.json", "base_test": "base_test.json", "novel_train": "novel_train.json",
               "base_web": "base_web.json"}
#: the optional parts of a weak-shot folder and what their absence means
WEAKSHOT_OPTIONAL = {"novel_train": "clean training images of the novel classes",
                     "base_web": "web images of the base classes"}


def filelist_path(data_path: str, split: str) -> str:
    """Path of the filelist of `split` inside `data_path`, or a one-line error if missing."""
    if not data_path or not os.path.isdir(data_path):
        raise UserError(f"--data_path {data_path!r} is not a folder; point it at the dataset folder "
                        f"(the one holding images/ and train.csv, val.csv, test.csv)")
    path = os.path.join(data_path, SPLIT_FILES[split])
    if not os.path.isfile(path):
        if split in ("web", "base_test"):
            raise UserError(f"{path} is missing; --data_path must be a weak-shot folder: build one with "
                            f"python -m data.weakshot (see its --help)")
        if split in WEAKSHOT_OPTIONAL:
            raise UserError(f"{path} is missing: this weak-shot folder has no {WEAKSHOT_OPTIONAL[split]} (its "
                            f"dataset or its builder has none); rebuild it with python -m data.weakshot, or pick "
                            f"another option")
        raise UserError(f"{path} is missing; write the filelists first: "
                        f"python write_miniImagenet_filelist.py --data_path {data_path}")
    return path


def load_filelist(path: str) -> dict:
    """Read and check a filelist JSON file."""
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path} is not a readable filelist ({err}); rewrite it with "
                        f"write_miniImagenet_filelist.py") from None
    for key in ("label_names", "image_names", "image_labels"):
        if key not in meta:
            raise UserError(f"{path} has no {key!r}; rewrite it with write_miniImagenet_filelist.py")
    if len(meta["image_names"]) != len(meta["image_labels"]) or not meta["image_names"]:
        raise UserError(f"{path} is empty or its image_names and image_labels differ in length")
    meta.setdefault("file_names", [os.path.basename(p) for p in meta["image_names"]])
    return meta


def open_rgb(path: str) -> Image.Image:
    """Open an image as RGB, with a one-line error naming a missing or corrupt file."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise UserError(f"image {path} is missing; re-extract the dataset or rewrite the filelists") from None
    except OSError as err:
        raise UserError(f"image {path} is corrupt or not an image ({err}); replace it or remove it "
                        f"from the split CSV and rewrite the filelists") from None


class ImageList(paddle.io.Dataset):
    """(image tensor, label) pairs of one filelist."""

    def __init__(self, filelist: str, transform: Optional[Callable] = None, check_files: bool = True):
        meta = load_filelist(filelist)
        self.path = filelist
        self.images: List[str] = meta["image_names"]
        self.labels = np.asarray(meta["image_labels"], dtype=np.int64)
        self.label_names: List[str] = meta["label_names"]
        self.file_names: List[str] = meta["file_names"]
        self.transform = transform
        if check_files:
            missing = next((p for p in self.images if not os.path.isfile(p)), None)
            if missing is not None:
                raise UserError(f"image {missing} listed in {filelist} is missing; re-extract the "
                                f"dataset or rewrite the filelists")

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = open_rgb(self.images[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]
