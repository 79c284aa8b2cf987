"""The similarity folder of SimTrans's step 2: one `class_<label>.npz` per novel class (its web
images' file names, features and similarity matrix) and `similarity.json` (the weak-shot
dataset's fingerprint, the SimNet that made it, the classes). Written atomically; read back
only for the weak-shot dataset it was computed on.
"""
import json
import os
import shutil
import tempfile
from typing import List, Tuple

import numpy as np

from data.weakshot import WeakShot
from utils.errors import UserError

SIMILARITY_MANIFEST = "similarity.json"


def write_similarity(save_dir: str, weakshot: WeakShot, simnet_path: str,
                     per_class: List[Tuple[List[str], np.ndarray, np.ndarray]]) -> None:
    """The similarity folder: similarity.json (dataset fingerprint, SimNet, classes) and one
    class_<label>.npz per novel class (file_names, features, matrix). Written in a temporary
    folder moved into place, so a failed run leaves an earlier folder intact."""
    parent = os.path.dirname(os.path.abspath(save_dir))
    os.makedirs(parent, exist_ok=True)
    temp = tempfile.mkdtemp(dir=parent, prefix=".tmp_similarity_")
    try:
        for label, (names, features, matrix) in enumerate(per_class):
            np.savez(os.path.join(temp, f"class_{label}.npz"), file_names=np.asarray(names),
                     features=features, matrix=matrix)
        with open(os.path.join(temp, SIMILARITY_MANIFEST), "w") as f:
            json.dump({"weakshot": weakshot.fingerprint, "data_path": weakshot.path,
                       "simnet": os.path.abspath(simnet_path), "classes": weakshot.novel_classes,
                       "images": [len(n) for n, _, _ in per_class]}, f, indent=1)
        if os.path.isdir(save_dir):
            shutil.rmtree(save_dir)
        os.replace(temp, save_dir)
    finally:
        if os.path.isdir(temp):
            shutil.rmtree(temp)


def read_similarity(load_dir: str, weakshot: WeakShot, flag: str = "--load_dir") -> List[np.ndarray]:
    """The similarity matrix of every novel class, rows in web.json order, after checking that the
    folder was computed for this weak-shot dataset."""
    manifest = os.path.join(load_dir or "", SIMILARITY_MANIFEST)
    if not load_dir or not os.path.isfile(manifest):
        raise UserError(f"{flag} {load_dir!r} is not a similarity folder (no {SIMILARITY_MANIFEST}); pass the "
                        f"--save_dir of step 2 (test.py --method simtrans_simnet)")
    with open(manifest) as f:
        info = json.load(f)
    if info.get("weakshot") != weakshot.fingerprint or info.get("classes") != weakshot.novel_classes:
        raise UserError(f"{flag} {load_dir} holds similarities of another weak-shot dataset (fingerprint "
                        f"{info.get('weakshot')}, --data_path has {weakshot.fingerprint}); rerun step 2 for "
                        f"this --data_path")
    web = weakshot.web
    matrices = []
    for label in range(len(weakshot.novel_classes)):
        path = os.path.join(load_dir, f"class_{label}.npz")
        if not os.path.isfile(path):
            raise UserError(f"{flag} {load_dir} has no {os.path.basename(path)}; rerun step 2 for this --data_path")
        with np.load(path) as z:
            names, matrix = z["file_names"].tolist(), z["matrix"]
        expected = [n for n, of in zip(web["file_names"], web["image_labels"]) if of == label]
        if names != expected:
            raise UserError(f"{flag} {load_dir}: the web images of class {weakshot.novel_classes[label]!r} differ "
                            f"from web.json's; rerun step 2 for this --data_path")
        matrices.append(matrix)
    return matrices
