"""Shared by the predict/export/infer tests: the methods that export, their tiny settings, random
checkpoints, one test episode written out as a support folder and a query folder, infer.py as a
module."""
import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import numpy as np
import paddle

from frn.args import parse, test_parser
from frn.checkpoint import save_model
from frn.runs import build_model
from methods import METHODS
from tests.conftest import ROOT

FEW_SHOT = sorted(m for m, cls in METHODS.items() if cls.workflow == "few_shot")
#: every method export.py turns into a static model (the others say why they cannot)
EXPORTABLE = [m for m in FEW_SHOT if not METHODS[m].export_blocker]
#: tiny settings per method (CPU seconds); the transform of mini_imagenet resizes and crops, so
#: the pipelines that infer.py reproduces from classes.json are exercised
SIZE = 32
SETTINGS: Dict[str, List[str]] = {
    "mtl": ["--model", "ResNet25", "--widths", "4,8,16", "--blocks", "1", "--update_step", "5"],
    "neg_margin": ["--finetune_steps", "40"],
    "deepemd": ["-sfc_update_step", "3"],
}


def model_flags(method: str) -> List[str]:
    """--method, backbone, size, dataset transform and the method's tiny settings."""
    flags = ["--method", method, "--model", "Conv4", "--image_size", str(SIZE), "--dataset", "mini_imagenet",
             "--num_workers", "0"]
    return flags + SETTINGS.get(method, [])


def random_checkpoint(method: str, path: Path, seed: int = 0) -> Path:
    """A seeded, untrained model of `method` saved as a checkpoint (the paths compared here must
    agree on any weights)."""
    options = parse(test_parser(), model_flags(method)).options
    paddle.seed(seed)
    save_model(build_model(options), str(path))
    return path


def load_infer():
    """infer.py as a module (it is a standalone script, not part of a package)."""
    spec = importlib.util.spec_from_file_location("infer_script", ROOT / "infer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Episode:
    """One 5-way test episode of the tiny novel classes, as test.py and as predict.py see it."""
    file: Path            # the episodes JSON of test.py --episodes_file
    support: Path         # support/<class>/<image>
    query: Path           # query/<class>/<image>
    classes: List[str]


def write_episode(data: Path, folder: Path, shot: int = 2, query: int = 3) -> Episode:
    """The first `shot` images (by name) of every novel class as support, the next `query` as
    queries; classes in name order, the order predict.py gives them, so that a test-time fit
    that draws random numbers (Negative-Margin) sees the same support order in both."""
    meta = json.loads((data / "novel.json").read_text())
    by_class: Dict[str, List[str]] = {}
    for path, label in zip(meta["image_names"], meta["image_labels"]):
        by_class.setdefault(meta["label_names"][label], []).append(path)
    classes = sorted(by_class)
    episode = {"classes": classes, "support": [], "query": []}
    for name in classes:
        files = sorted(by_class[name], key=lambda p: Path(p).name)
        for kind, chosen in (("support", files[:shot]), ("query", files[shot:shot + query])):
            target = folder / kind / name
            target.mkdir(parents=True, exist_ok=True)
            for path in chosen:
                shutil.copy(path, target / Path(path).name)
            episode[kind].append([Path(p).name for p in chosen])
    file = folder / "episode.json"
    file.write_text(json.dumps({"split": "novel", "way": len(classes), "shot": shot, "query": query,
                                "episodes": [episode]}))
    return Episode(file, folder / "support", folder / "query", classes)


def read_csv(path: Path) -> List[Dict[str, str]]:
    import csv
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def probabilities(rows: List[Dict[str, str]], classes: List[str]) -> np.ndarray:
    return np.asarray([[float(row[c]) for c in classes] for row in rows])


def assert_same_predictions(expected: List[Dict[str, str]], got: List[Dict[str, str]], classes: List[str],
                            atol: float) -> None:
    """Two prediction CSVs of the same images: probabilities within `atol`, and the same
    prediction wherever the best two classes are more than `atol` apart (a nearer tie may go
    either way under float32 rounding)."""
    a, b = probabilities(expected, classes), probabilities(got, classes)
    np.testing.assert_allclose(b, a, atol=atol)
    top2 = np.sort(a, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > atol
    assert (a.argmax(1) == b.argmax(1))[clear].all()
    assert [r["image"] for r in expected] == [r["image"] for r in got]
