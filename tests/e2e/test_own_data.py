"""docs/own_data.md end to end: class folders of photos of any size -> filelists (--dataset folder) ->
training with --dataset custom -> test, in the run folder named after the data folder."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_script

#: 18 classes: 8 to train on, 5 to validate, 5 to test (5-way episodes)
SPLITS = {"train": 8, "val": 5, "test": 5}


@pytest.fixture(scope="module")
def my_images(tmp_path_factory) -> Path:
    """Class folders of JPEG photos of mixed sizes and aspect ratios, and the three class lists."""
    root = tmp_path_factory.mktemp("own") / "my_images"
    rng = np.random.default_rng(0)
    names = iter(f"class_{i:02d}" for i in range(sum(SPLITS.values())))
    for split, count in SPLITS.items():
        classes = [next(names) for _ in range(count)]
        for name in classes:
            (root / name).mkdir(parents=True)
            colour = rng.integers(0, 255, 3)
            for i in range(8):
                height, width = rng.integers(30, 70, 2)
                pixels = np.clip(colour + rng.normal(0, 40, (height, width, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / name / f"photo_{i}.jpg")
        (root / f"{split}.txt").write_text("\n".join(classes) + "\n")
    return root


def test_train_on_your_own_images(my_images, tmp_path):
    written = run_script("write_miniImagenet_filelist.py", "--dataset", "folder", "--data_path", my_images)
    assert written.returncode == 0, written.stderr
    common = ["--dataset", "custom", "--data_path", my_images, "--model", "Conv4", "--method", "protonet",
              "--image_size", "32", "--num_workers", "0", "--n_query", "3", "--checkpoint_dir", tmp_path]
    trained = run_script("pretrain.py", *common, "--epoch", "1", "--batch_size", "16", "--val_n_episode", "4")
    assert trained.returncode == 0, trained.stderr
    run = tmp_path / "custom" / "my_images" / "Conv4_protonet_pretrain"
    tested = run_script("test.py", *common, "--n_shot", "1", "--test_n_episode", "5",
                        "--model_path", run / "best_model.pdparams")
    assert tested.returncode == 0, tested.stderr
    assert re.search(r"^5 Test Acc = [\d.]+% \+- [\d.]+%$", tested.stdout, re.M), tested.stdout
    (record,) = json.loads((run / "results.json").read_text())
    assert record["dataset"] == "custom" and record["data_path"] == str(my_images)
