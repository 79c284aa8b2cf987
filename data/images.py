"""Reading the user's own images (predict.py, export.py): any common file format and mode, decoded
the same way every time, and the lists of files behind a `--query` or `--support` argument.

Decoding (`load_image`) gives an upright RGB image:
- the EXIF orientation is applied (a phone photo taken sideways is classified as it is seen);
- a transparent image (RGBA, LA, a palette or greyscale with a transparent colour) is composited
  over white, so the hidden colour of transparent pixels never matters;
- 16-bit greyscale (modes I;16*, I) is scaled to 8 bits (value / 257, rounded), floats (F) are
  clipped to 0..255; CMYK, YCbCr, LAB, HSV, 1-bit and 8-bit greyscale go through PIL's
  conversion to RGB; the first frame of an animated GIF or WebP is used.
infer.py repeats these rules with PIL and numpy only (it imports nothing of the project);
tests/predict/test_images.py checks that both give the same pixels for every mode.

The training data of the datasets is read by data/datasets.py (`open_rgb`), unchanged.
"""
import glob
import os
from typing import Iterable, List, Sequence, Tuple

import numpy as np
import paddle
from PIL import Image, ImageOps, UnidentifiedImageError

from utils.errors import UserError

#: file name endings taken from a folder (a file named explicitly is read whatever its ending)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")
#: the colour transparent pixels are composited over
BACKGROUND = (255, 255, 255)
#: modes with an alpha channel
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def to_rgb(img: Image.Image) -> Image.Image:
    """An image of any PIL mode as 8-bit RGB (alpha composited over `BACKGROUND`)."""
    if img.mode == "RGB":
        return img
    if img.mode in ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode.startswith("I"):  # 16-bit (or 32-bit integer) greyscale
        values = np.asarray(img, dtype=np.float64)
        return Image.fromarray(np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "F":
        values = np.clip(np.round(np.asarray(img, dtype=np.float64)), 0, 255)
        return Image.fromarray(values.astype(np.uint8)).convert("RGB")
    return img.convert("RGB")


def upright(img: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says (a copy; unchanged when there is none or
    the EXIF block cannot be read)."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # a damaged EXIF block: PIL raises several types; the pixels are still fine
        return img.copy()


def load_image(path: str, flag: str = "image") -> Image.Image:
    """The upright RGB image of a file, or a one-line error naming it (`flag`: the argument it
    came from)."""
    try:
        with Image.open(path) as img:
            return to_rgb(upright(img))
    except FileNotFoundError:
        raise UserError(f"{flag} {path} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        why = str(err).split("\n")[0] or type(err).__name__
        raise UserError(f"{flag} {path} is not an image PIL can read ({why}); remove it or convert it to "
                        f"JPEG/PNG") from None


def is_image_name(name: str) -> bool:
    """Whether a file name has one of the `IMAGE_EXTENSIONS` (case-insensitive)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def images_below(folder: str) -> List[str]:
    """Image files in `folder` and its sub-folders, sorted by path; hidden files and folders
    (".DS_Store", "._photo.jpg", ".ipynb_checkpoints") are skipped."""
    found: List[str] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(root, f) for f in files if not f.startswith(".") and is_image_name(f))
    return sorted(found)


def list_images(specs: Sequence[str], flag: str = "--query") -> List[str]:
    """The image files named by `specs`: files (any ending), folders (searched recursively for
    image files) and glob patterns (`photos/*.jpg`, `photos/**/*.png`), in the order given,
    each file once. Raises a one-line error for a spec that names nothing."""
    paths: List[str] = []
    for spec in specs:
        if os.path.isdir(spec):
            found = images_below(spec)
            if not found:
                raise UserError(f"{flag} {spec} holds no images ({', '.join(IMAGE_EXTENSIONS[:6])}, ...) "
                                f"in it or its sub-folders")
        elif os.path.isfile(spec):
            found = [spec]
        elif glob.has_magic(spec):
            matches = sorted(glob.glob(spec, recursive=True))
            found = [p for m in matches for p in (images_below(m) if os.path.isdir(m) else [m])]
            if not found:
                raise UserError(f"{flag} {spec} matches no image file")
        else:
            raise UserError(f"{flag} {spec} does not exist")
        paths.extend(found)
    return list(dict.fromkeys(paths))  # each file once, first position kept


def folder_labels(paths: Iterable[str], class_names: Sequence[str]) -> np.ndarray:
    """The class index of each path whose parent folder is named like a class, else -1 (the
    query images of a prediction whose true class is known)."""
    index = {name: i for i, name in enumerate(class_names)}
    return np.asarray([index.get(os.path.basename(os.path.dirname(os.path.abspath(p))), -1) for p in paths],
                      dtype=np.int64)


class ImageFiles(paddle.io.Dataset):
    """(transformed image, position) of a list of image files, decoded by `load_image`."""

    def __init__(self, paths: Sequence[str], transform, flag: str = "image"):
        self.paths, self.transform, self.flag = list(paths), transform, flag

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tuple[object, int]:
        return self.transform(load_image(self.paths[index], self.flag)), index
