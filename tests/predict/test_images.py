"""The user's images in any common format and mode decode to the same upright RGB pixels in
predict.py (data/images.py) and infer.py (its own copy of the rules), and all of them classify."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.images import list_images, load_image
from tests.conftest import run_entry
from tests.predict.helpers import load_infer, model_flags, random_checkpoint, read_csv

H, W = 40, 60  # not square, so a missed rotation changes the shape


def upright() -> np.ndarray:
    """An asymmetric RGB picture: a gradient with a red block in the top-left corner."""
    y, x = np.mgrid[0:H, 0:W]
    image = np.stack([x * 4, y * 6, (x + y) * 2], axis=-1).astype(np.uint8)
    image[:10, :15] = (255, 0, 0)
    return image


def exif(orientation: int) -> Image.Exif:
    tags = Image.Exif()
    tags[0x0112] = orientation
    return tags


def write_all(folder: Path) -> dict:
    """One file per format/mode; returns {file name: the PIL image it stores}."""
    rgb = Image.fromarray(upright())
    rgba = rgb.convert("RGBA")
    alpha = np.full((H, W), 255, np.uint8)
    alpha[:, W // 2:] = 0  # the right half transparent
    rgba.putalpha(Image.fromarray(alpha))
    palette = rgb.quantize(16)
    palette.info["transparency"] = 0
    sixteen = Image.fromarray((np.asarray(rgb.convert("L"), np.uint16) * 257).astype(np.uint16))
    files = {
        "rgb.jpg": rgb, "rgb.png": rgb, "rgb.bmp": rgb, "rgb.tiff": rgb, "lossy.webp": rgb,
        "grey.png": rgb.convert("L"), "grey_alpha.png": rgba.convert("LA"), "rgba.png": rgba,
        "rgba.webp": rgba, "palette.png": palette, "palette.gif": rgb.quantize(32), "cmyk.jpg": rgb.convert("CMYK"),
        "bilevel.png": rgb.convert("1"), "grey16.png": sixteen,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in files.items():
        image.save(folder / name, **({"lossless": False} if name == "lossy.webp" else {}))
    # stored turned a quarter counter-clockwise, with EXIF orientation 6 ("rotate 90 clockwise to view")
    turned = rgb.transpose(Image.ROTATE_90)
    turned.save(folder / "exif_rotated.png", exif=exif(6))
    turned.save(folder / "exif_rotated.jpg", exif=exif(6), quality=95)
    files.update({"exif_rotated.png": turned, "exif_rotated.jpg": turned})
    return files


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("formats") / "photos"
    write_all(folder)
    return folder


def test_every_file_decodes_to_upright_rgb_alike_in_predict_and_infer(images):
    infer = load_infer()
    paths = list_images([str(images)])
    assert len(paths) == 16
    for path in paths:
        ours = load_image(path)
        assert ours.mode == "RGB" and ours.size == (W, H), path   # EXIF rotation applied
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(infer.load_image(path)), err_msg=path)


def test_exif_orientation_is_applied(images):
    np.testing.assert_array_equal(np.asarray(load_image(str(images / "exif_rotated.png"))), upright())
    jpeg = np.asarray(load_image(str(images / "exif_rotated.jpg")), np.float64)
    assert np.abs(jpeg - upright()).mean() < 4  # JPEG loss only
    block = jpeg[2:8, 2:12]  # inside the red block (JPEG blurs colour edges)
    assert (block[..., 0] > 200).all() and (block[..., 1:] < 60).all()  # the red block is top-left


def test_transparent_pixels_become_white_and_16_bit_is_scaled(images):
    rgba = np.asarray(load_image(str(images / "rgba.png")))
    assert (rgba[:, W // 2:] == 255).all() and (rgba[:, :W // 2] == upright()[:, :W // 2]).all()
    palette = Image.open(images / "palette.png")
    transparent = np.asarray(palette) == 0
    assert transparent.any() and (np.asarray(load_image(str(images / "palette.png")))[transparent] == 255).all()
    grey = np.asarray(Image.fromarray(upright()).convert("L"))
    np.testing.assert_array_equal(np.asarray(load_image(str(images / "grey16.png")))[..., 0], grey)


def test_every_format_classifies_in_predict_and_infer(images, episode, tmp_path):
    checkpoint = random_checkpoint("protonet", tmp_path / "model.pdparams")
    flags = [*model_flags("protonet"), "--model_path", checkpoint, "--support", episode.support]
    code, out, err = run_entry("predict.py", [*flags, "--query", images, "--out", tmp_path / "p.csv"])
    assert code == 0, err
    assert out.startswith("16 images ->"), out
    code, _, err = run_entry("export.py", [*flags, "--out_dir", tmp_path / "exported"])
    assert code == 0, err
    load_infer().run(["--model_dir", str(tmp_path / "exported"), "--query", str(images / "*"),
                      "--out", str(tmp_path / "i.csv")])
    predicted, inferred = read_csv(tmp_path / "p.csv"), read_csv(tmp_path / "i.csv")
    assert len(predicted) == 16 and [r["prediction"] for r in predicted] == [r["prediction"] for r in inferred]
