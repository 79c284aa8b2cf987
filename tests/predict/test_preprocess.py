"""The evaluation pipelines written as data (data/preprocess.py, classes.json) and applied by
infer.py with PIL + numpy give exactly the tensors of the pipelines themselves, for every method
and dataset transform; pipelines that cannot be written down are refused."""
import numpy as np
import pytest
from PIL import Image

from data.preprocess import NotDescribable, describe_transform
from data.transforms import DATASET_TRANSFORMS
from frn.args import parse, test_parser
from frn.runs import image_pipeline
from tests.predict.helpers import FEW_SHOT, load_infer, model_flags

#: sizes around the resize targets: portrait, landscape, square, smaller than the output,
#: odd, and a shorter side equal to the resize target (Paddle's no-resize branch: 92/84*84 = 92)
SIZES = [(37, 53), (120, 80), (84, 84), (20, 31), (201, 99), (92, 150)]


def images():
    rng = np.random.RandomState(0)
    return [Image.fromarray(rng.randint(0, 256, (h, w, 3)).astype(np.uint8)) for h, w in SIZES]


def options(method: str, *extra: str, size: int = 84, dataset: str = "mini_imagenet"):
    flags = model_flags(method) + ["--image_size", str(size), "--dataset", dataset, *extra]
    return parse(test_parser(), flags).options


def cases():
    """(method, extra flags, image size, dataset) of every evaluation pipeline to reproduce."""
    for method in FEW_SHOT:
        for dataset in sorted(DATASET_TRANSFORMS):
            yield method, (), 84, dataset
    yield "neg_margin", ("--protocol", "bl0"), 84, "mini_imagenet"
    yield "mtl", (), 80, "mini_imagenet"
    yield "protonet", (), 33, "cub"


@pytest.mark.parametrize("method,extra,size,dataset", list(cases()))
def test_infer_reproduces_the_evaluation_pipeline_exactly(method, extra, size, dataset):
    transform = image_pipeline(options(method, *extra, size=size, dataset=dataset), training=False)
    spec = describe_transform(transform)
    infer = load_infer()
    for image in images():
        expected = np.asarray(transform(image), dtype=np.float32)
        got = infer.preprocess(image, spec["steps"])
        assert got.dtype == np.float32 and list(got.shape) == spec["input_shape"]
        np.testing.assert_array_equal(got, expected)


def test_random_or_patch_pipelines_cannot_be_written_down():
    with pytest.raises(NotDescribable):
        describe_transform(image_pipeline(options("meta_frn"), training=True))
    for variant in ("grid", "sampling"):
        with pytest.raises(NotDescribable):
            describe_transform(image_pipeline(options("deepemd", "-deepemd", variant), training=False))


def test_the_description_is_complete_data():
    spec = describe_transform(image_pipeline(options("neg_margin", "--protocol", "bl0"), training=False))
    ops = [s["op"] for s in spec["steps"]]
    assert ops == ["resize", "center_crop", "to_float", "normalize", "to_chw"]
    assert spec["steps"][0]["size"] == [96, 96] and spec["steps"][1]["size"] == [84, 84]
    assert spec["steps"][3]["mean"] == [0.507, 0.487, 0.441]
    assert spec["channel_order"] == "RGB" and spec["input_shape"] == [3, 84, 84]
    assert spec["decode"]["background"] == [255, 255, 255] and spec["decode"]["exif_transpose"]
