"""A labelled support set given by the user (predict.py / export.py `--support`): a folder with
one sub-folder per class (the sub-folder's name is the class name), or a CSV file of
`path,label` rows (header optional; relative paths are relative to the CSV's folder).

Classes are ordered by name and images by path (folders) or by row (CSV), so the same support
set always gives the same class indices and the same order of images.
"""
import csv
import os
from dataclasses import dataclass
from typing import Dict, List

import numpy as np

from data.images import images_below
from utils.errors import UserError

MIN_CLASSES = 2


@dataclass
class LabelledImages:
    """Image paths, their class indices and the class names (index i is class_names[i])."""
    paths: List[str]
    labels: np.ndarray
    class_names: List[str]

    def counts(self) -> np.ndarray:
        """Images per class."""
        return np.bincount(self.labels, minlength=len(self.class_names))


def read_support(source: str, flag: str = "--support") -> LabelledImages:
    """The support set of a class-folder tree or a `path,label` CSV file; one-line errors for
    fewer than two classes, an empty class or a missing file."""
    if os.path.isdir(source):
        by_class = class_folders(source, flag)
    elif os.path.isfile(source):
        by_class = csv_rows(source, flag)
    else:
        raise UserError(f"{flag} {source} does not exist; pass a folder with one sub-folder per class, "
                        f"a path,label CSV file or a .pdsupport file")
    names = sorted(by_class)
    if len(names) < MIN_CLASSES:
        found = f"only class {names[0]!r}" if names else "no class"
        raise UserError(f"{flag} {source} has {found}; a support set needs at least {MIN_CLASSES} classes")
    paths = [p for name in names for p in by_class[name]]
    labels = np.concatenate([np.full(len(by_class[name]), i, dtype=np.int64) for i, name in enumerate(names)])
    return LabelledImages(paths, labels, names)


def class_folders(folder: str, flag: str) -> Dict[str, List[str]]:
    """{class name: its images} of a folder whose sub-folders are the classes."""
    subfolders = sorted(d for d in os.listdir(folder)
                        if not d.startswith(".") and os.path.isdir(os.path.join(folder, d)))
    if not subfolders:
        raise UserError(f"{flag} {folder} has no class sub-folders; put each class's images in a sub-folder "
                        f"named after the class")
    by_class = {}
    for name in subfolders:
        images = images_below(os.path.join(folder, name))
        if not images:
            raise UserError(f"{flag} class folder {os.path.join(folder, name)} holds no images; add some or remove it")
        by_class[name] = images
    return by_class


def csv_rows(path: str, flag: str) -> Dict[str, List[str]]:
    """{class name: its images} of a `path,label` CSV file (an optional header row `path,label`)."""
    base = os.path.dirname(os.path.abspath(path))
    by_class: Dict[str, List[str]] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"{flag} {path} is not a readable CSV file ({type(err).__name__}); write it as "
                        f"path,label rows") from None
    for number, row in enumerate(rows, start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        if number == 1 and [c.strip().lower() for c in row[:2]] == ["path", "label"]:
            continue  # the header
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise UserError(f"{flag} {path} line {number} is not a path,label row: {','.join(row)!r}")
        image = os.path.join(base, row[0].strip())
        if not os.path.isfile(image):
            raise UserError(f"{flag} {path} line {number}: image {row[0].strip()} does not exist")
        by_class.setdefault(row[1].strip(), []).append(image)
    return by_class
