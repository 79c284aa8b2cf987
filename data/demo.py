"""A small embedded dataset for the demo, CI and notebooks: no download, no network.

Each class is one glyph (Latin, Greek, Cyrillic and Armenian letters, digits, symbols) drawn
with the DejaVu fonts that matplotlib ships. Every image varies the font (Sans / Serif / Mono,
regular or bold), rotation (+-25 degrees), size, position, the stroke colour (dark, any hue),
the background (a light two-colour gradient) and the noise, so a class is a shape to recognise
rather than a fixed picture. Generation is deterministic for a seed and takes a few seconds.

The output has the mini-ImageNet CSV layout:
    <out>/images/c042_0007.jpg ...            flat, unique names
    <out>/train.csv, val.csv, test.csv        header "filename,label", disjoint classes
    <out>/demo_info.json                      the settings; marks the dataset as complete

Usage:  python -m data.demo --out demo_data/glyphs [--n_classes 100] [--images_per_class 30]
                            [--image_size 84] [--seed 0] [--splits 64 16 20]
"""
import argparse
import csv
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from utils.errors import UserError, exit_on_user_error

# Pillow >= 9.1 names these constants in enums (the spelling its type hints know); older Pillow
# has only the module-level names, which newer releases keep as aliases
BILINEAR = getattr(Image, "Resampling", Image).BILINEAR
AFFINE = getattr(Image, "Transform", Image).AFFINE

#: bump when the images change for the same settings, so old demo folders are rebuilt
GENERATOR_VERSION = 1
INFO_FILE = "demo_info.json"
SPLIT_NAMES = ("train", "val", "test")
DEFAULT_SPLITS = (64, 16, 20)

#: font variants of one class (intra-class variation); a glyph must exist in all of them
FONT_FILES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf",
              "DejaVuSerif-Bold.ttf", "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf")

#: candidate glyphs by script; classes are drawn from them in turn so that any number of
#: classes mixes scripts
SCRIPTS: Tuple[str, ...] = (
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "abcdefghijklmnopqrstuvwxyz",
    "0123456789",
    "".join(map(chr, range(0x391, 0x3AA))),  # Greek capitals
    "".join(map(chr, range(0x3B1, 0x3CA))),  # Greek small letters
    "".join(map(chr, range(0x410, 0x430))),  # Cyrillic capitals
    "".join(map(chr, range(0x430, 0x450))),  # Cyrillic small letters
    "".join(map(chr, range(0x531, 0x557))),  # Armenian capitals
    "".join(map(chr, range(0x561, 0x587))),  # Armenian small letters
    "@&#%?!$§¶€£¥©®¿" "←↑→↓↔↕⇐⇑⇒⇓" "■□▲△▼▽◆◇○●◐◑★☆" "♠♣♥♦♤♧♡♢♪♫☺☻☼⌂"
    "∞∑∏∫√∂∇≈≠≡≤≥⊕⊗⊂⊃∈∩∪∀∃",
)

#: two glyphs are the same class if their size-normalised shapes correlate above this, at any
#: relative rotation the images can produce (each image is rotated by up to +-MAX_ROTATION)
SAME_SHAPE = 0.8
#: intra-class variation: rotation (degrees), glyph size (longer side, fraction of the image),
#: shift of its centre (fraction of the image), background noise (std, grey levels)
MAX_ROTATION = 25.0
EXTENT_RANGE = (0.55, 0.8)
MAX_SHIFT = 0.06
NOISE_RANGE = (3.0, 12.0)
#: colours: any hue; the background light and the stroke darker (one polarity keeps the demo
#: learnable in minutes on a CPU)
BACKGROUND_LUMINANCE = (0.55, 1.0)
STROKE_LUMINANCE = (0.0, 0.4)
MIN_CONTRAST = 0.3
_SIGNATURE_ANGLES = (-45.0, -30.0, -15.0, 0.0, 15.0, 30.0, 45.0)
_SIGNATURE_SIZE = 20
_PROBE_SIZE = 40  # font size (px) for glyph checks and signatures


@dataclass(frozen=True)
class Glyph:
    """One class: a character, numbered by its position in the glyph pool."""

    index: int
    char: str

    @property
    def name(self) -> str:
        """The class label, e.g. `glyph_0042_U+03A9`."""
        return f"glyph_{self.index:04d}_U+{ord(self.char):04X}"


# ----------------------------------------------------------------------------- fonts, glyphs

def font_dir() -> str:
    """The folder of the TrueType fonts shipped with matplotlib."""
    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf")


@lru_cache(maxsize=None)
def load_font(file: str, size: int) -> ImageFont.FreeTypeFont:
    """A matplotlib font at `size` pixels."""
    return ImageFont.truetype(os.path.join(font_dir(), file), size)


def draw_char(char: str, font: ImageFont.FreeTypeFont) -> Image.Image:
    """`char` drawn white on black, centred on a canvas with room to spare (mode L)."""
    side = 3 * int(font.size)  # an int size here (Pillow types it float)
    canvas = Image.new("L", (side, side), 0)
    ImageDraw.Draw(canvas).text((side // 2, side // 2), char, font=font, fill=255, anchor="mm")
    return canvas


@lru_cache(maxsize=None)
def _notdef(file: str) -> bytes:
    """The pixels of the font's "missing glyph" box (U+FFFF is never a character)."""
    return draw_char("\uffff", load_font(file, _PROBE_SIZE)).tobytes()


@lru_cache(maxsize=4096)
def probe(char: str, file: str) -> Image.Image:
    """`char` drawn in font `file` at the probe size, for glyph checks and signatures."""
    return draw_char(char, load_font(file, _PROBE_SIZE))


def has_glyph(char: str) -> bool:
    """True if every font variant draws `char` with some ink and not as the missing-glyph box."""
    for file in FONT_FILES:
        drawn = probe(char, file)
        if drawn.getbbox() is None or drawn.tobytes() == _notdef(file):
            return False
    return True


def crop_to_ink(mask: Image.Image) -> Image.Image:
    """The smallest part of `mask` holding all its ink."""
    return mask.crop(mask.getbbox())


def shape_signature(mask: Image.Image, angle: float = 0.0) -> np.ndarray:
    """Unit-norm, zero-mean vector of the glyph's shape, independent of its size and position."""
    ink = crop_to_ink(crop_to_ink(mask).rotate(angle, resample=BILINEAR, expand=True))
    side = max(ink.size)
    square = Image.new("L", (side, side), 0)
    square.paste(ink, ((side - ink.width) // 2, (side - ink.height) // 2))
    small = square.resize((_SIGNATURE_SIZE, _SIGNATURE_SIZE), BILINEAR)
    vec = np.asarray(small, dtype=np.float32).ravel()
    vec -= vec.mean()
    return vec / (np.linalg.norm(vec) + 1e-6)


def glyph_signatures(char: str, angles: Sequence[float] = (0.0,)) -> np.ndarray:
    """Signatures of `char` over all font variants: shape (len(angles), n_fonts * features),
    scaled so the dot product of two rows is the mean per-font correlation."""
    masks = [probe(char, file) for file in FONT_FILES]
    rows = [np.concatenate([shape_signature(m, a) for m in masks]) for a in angles]
    return np.stack(rows) / np.sqrt(len(FONT_FILES))


def candidate_chars() -> Iterator[str]:
    """The candidate characters, taking one from each script in turn."""
    longest = max(len(script) for script in SCRIPTS)
    for position in range(longest):
        for script in SCRIPTS:
            if position < len(script):
                yield script[position]


@lru_cache(maxsize=None)
def _glyph_pool(n: int) -> Tuple[str, ...]:
    """The first `n` candidate characters that every font has and that differ in shape from
    all earlier ones (the pool for n is a prefix of the pool for any larger n)."""
    chosen: List[str] = []
    kept = np.zeros((0, len(FONT_FILES) * _SIGNATURE_SIZE ** 2), dtype=np.float32)
    for char in candidate_chars():
        if len(chosen) == n:
            break
        if not has_glyph(char):
            continue
        views = glyph_signatures(char, _SIGNATURE_ANGLES)
        # matrix-vector products: a matrix product would start BLAS threads, slow on a busy CPU
        if kept.size and max(float((kept @ view).max()) for view in views) > SAME_SHAPE:
            continue
        chosen.append(char)
        kept = np.vstack([kept, views[_SIGNATURE_ANGLES.index(0.0)]])
    if len(chosen) < n:
        raise UserError(f"the fonts have only {len(chosen)} distinct glyphs; ask for "
                        f"--n_classes {len(chosen)} or fewer")
    return tuple(chosen)


def select_glyphs(n_classes: int) -> List[Glyph]:
    """The `n_classes` glyph classes, numbered 0 .. n_classes-1."""
    return [Glyph(i, char) for i, char in enumerate(_glyph_pool(n_classes))]


@lru_cache(maxsize=4096)
def glyph_mask(char: str, file: str, extent: int) -> Image.Image:
    """`char` in font `file`, cropped to its ink and sized so its longer side is `extent` px."""
    ink = crop_to_ink(probe(char, file))
    size = max(4, round(_PROBE_SIZE * extent / max(ink.size)))
    return crop_to_ink(draw_char(char, load_font(file, size)))


# ----------------------------------------------------------------------------- one image

def luminance(rgb: np.ndarray) -> np.ndarray:
    """Relative luminance in [0, 1] of RGB values in [0, 255] (last axis)."""
    return rgb @ np.array([0.299, 0.587, 0.114]) / 255.0


def random_colour(rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """A uniformly random RGB colour whose luminance lies in [low, high]."""
    while True:
        colour = rng.uniform(0, 255, size=3)
        if low <= luminance(colour) <= high:
            return colour


def pick_colours(rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two light background colours and a darker stroke colour of any hue, the stroke at
    least MIN_CONTRAST darker than both, so the glyph stays visible."""
    back_a = random_colour(rng, *BACKGROUND_LUMINANCE)
    back_b = random_colour(rng, *BACKGROUND_LUMINANCE)
    darkest = float(min(luminance(back_a), luminance(back_b)))
    stroke = random_colour(rng, STROKE_LUMINANCE[0],
                           min(STROKE_LUMINANCE[1], darkest - MIN_CONTRAST))
    return back_a, back_b, stroke


def gradient_background(rng: np.random.Generator, size: int, colour_a: np.ndarray,
                        colour_b: np.ndarray) -> np.ndarray:
    """A size x size x 3 float image fading from `colour_a` to `colour_b` in a random direction."""
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:size, 0:size] / max(size - 1, 1) - 0.5
    ramp = xs * np.cos(angle) + ys * np.sin(angle)
    ramp = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6)
    return colour_a + ramp[..., None] * (colour_b - colour_a)


def placed_glyph(rng: np.random.Generator, char: str, size: int) -> np.ndarray:
    """Alpha (size x size, in [0, 1]) of `char` in a random font, rotated, scaled and moved."""
    file = FONT_FILES[rng.integers(len(FONT_FILES))]
    mask = glyph_mask(char, file, size)
    extent = rng.uniform(*EXTENT_RANGE)
    angle = np.deg2rad(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
    room = min(MAX_SHIFT, (0.95 - extent) / 2)  # keep the unrotated box inside the image
    centre = size * (0.5 + rng.uniform(-room, room, size=2))
    # inverse map: output pixel -> glyph pixel = R(-angle) (p - centre) / scale + glyph centre
    scale = extent * size / max(mask.size)
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    cx, cy = centre
    mx, my = mask.width / 2, mask.height / 2
    coeffs = (cos, sin, mx - cos * cx - sin * cy, -sin, cos, my + sin * cx - cos * cy)
    placed = mask.transform((size, size), AFFINE, coeffs, resample=BILINEAR)
    return np.asarray(placed, dtype=np.float32) / 255.0


def render_image(char: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One RGB image of the class `char`, with random font, pose, colours and noise."""
    back_a, back_b, stroke = pick_colours(rng)
    background = gradient_background(rng, size, back_a, back_b)
    alpha = placed_glyph(rng, char, size)[..., None]
    pixels = background * (1 - alpha) + stroke * alpha
    pixels += rng.normal(0, rng.uniform(*NOISE_RANGE), size=pixels.shape)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")


def image_rng(seed: int, class_index: int, image_index: int) -> np.random.Generator:
    """The random stream of one image: the same image for the same seed, in any build order."""
    return np.random.default_rng([seed, class_index, image_index])


# ----------------------------------------------------------------------------- the dataset

def image_name(glyph: Glyph, image_index: int) -> str:
    """File name of one image inside images/."""
    return f"c{glyph.index:03d}_{image_index:04d}.jpg"


def split_classes(glyphs: List[Glyph], splits: Sequence[int], seed: int) -> Dict[str, List[Glyph]]:
    """Disjoint train / val / test classes: a seeded shuffle cut into `splits` sizes."""
    order = np.random.default_rng(seed).permutation(len(glyphs))
    bounds = np.cumsum([0, *splits])
    return {name: [glyphs[i] for i in sorted(order[lo:hi])]
            for name, lo, hi in zip(SPLIT_NAMES, bounds[:-1], bounds[1:])}


def make_settings(n_classes: int, images_per_class: int, image_size: int, seed: int,
                  splits: Sequence[int]) -> dict:
    """The settings recorded in demo_info.json, checked for sense."""
    splits = [int(s) for s in splits]
    if len(splits) != 3 or min(splits) < 1 or sum(splits) != n_classes:
        raise UserError(f"splits {splits} must be three class counts >= 1 adding up to "
                        f"n_classes={n_classes}")
    if images_per_class < 1 or image_size < 16:
        raise UserError(f"need images_per_class >= 1 and image_size >= 16 "
                        f"(got {images_per_class}, {image_size})")
    return {"generator": "data.demo", "version": GENERATOR_VERSION, "n_classes": n_classes,
            "images_per_class": images_per_class, "image_size": image_size, "seed": seed,
            "splits": splits}


def read_info(folder: str) -> Optional[dict]:
    """The demo_info.json of `folder`, or None if absent or unreadable."""
    try:
        with open(os.path.join(folder, INFO_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_complete(folder: str, settings: dict) -> bool:
    """True if `folder` holds a finished demo dataset built with `settings`."""
    info = read_info(folder)
    if info is None or info.get("settings") != settings:
        return False
    images = os.path.join(folder, "images")
    expected = settings["n_classes"] * settings["images_per_class"]
    return (all(os.path.isfile(os.path.join(folder, f"{s}.csv")) for s in SPLIT_NAMES)
            and os.path.isdir(images) and len(os.listdir(images)) == expected)


def write_split_csv(path: str, glyphs: List[Glyph], images_per_class: int) -> None:
    """One split's CSV: header `filename,label`, then one row per image."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["filename", "label"])
        for glyph in glyphs:
            writer.writerows([image_name(glyph, i), glyph.name] for i in range(images_per_class))


def write_dataset(folder: str, settings: dict) -> None:
    """Write images, split CSVs and (last) demo_info.json into the new folder `folder`."""
    glyphs = select_glyphs(settings["n_classes"])
    images = os.path.join(folder, "images")
    os.makedirs(images)
    for glyph in glyphs:
        for i in range(settings["images_per_class"]):
            rng = image_rng(settings["seed"], glyph.index, i)
            image = render_image(glyph.char, settings["image_size"], rng)
            image.save(os.path.join(images, image_name(glyph, i)), quality=95)
    split = split_classes(glyphs, settings["splits"], settings["seed"])
    for name, members in split.items():
        write_split_csv(os.path.join(folder, f"{name}.csv"), members, settings["images_per_class"])
    info = {"settings": settings,
            "classes": {name: {g.name: g.char for g in members} for name, members in split.items()}}
    with open(os.path.join(folder, INFO_FILE), "w") as f:
        json.dump(info, f, indent=1, ensure_ascii=False)


def move_into_place(built: str, out: str, settings: dict) -> None:
    """Rename the finished folder `built` to `out`, replacing an old or partial demo there."""
    if os.path.exists(out):
        if is_complete(out, settings):  # another process finished the same build first
            return
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=os.path.dirname(out))
        os.replace(out, os.path.join(old, "data"))
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(built, out)
    except OSError:
        if not is_complete(out, settings):
            raise


def check_replaceable(out: str) -> None:
    """Refuse to overwrite a folder that is neither empty nor an earlier demo dataset."""
    if os.path.isfile(out):
        raise UserError(f"{out} is a file; give --out a folder path")
    if os.path.isdir(out) and os.listdir(out) and read_info(out) is None:
        raise UserError(f"{out} exists and is not a demo dataset; choose another --out "
                        f"or remove it")


def build_demo_dataset(out_dir: str, n_classes: int = 100, images_per_class: int = 30,
                       image_size: int = 84, seed: int = 0,
                       splits: Sequence[int] = DEFAULT_SPLITS) -> str:
    """Build the glyph dataset in `out_dir` (mini-ImageNet CSV layout) and return its absolute
    path. Returns at once if `out_dir` already holds the same dataset. The images are written
    to a temporary sibling folder renamed at the end, so an interrupted build leaves nothing
    half-written under `out_dir`."""
    settings = make_settings(n_classes, images_per_class, image_size, seed, splits)
    out = os.path.abspath(out_dir)
    if is_complete(out, settings):
        return out
    check_replaceable(out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    try:
        built = os.path.join(work, "data")
        write_dataset(built, settings)
        move_into_place(built, out, settings)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


# ----------------------------------------------------------------------------- command line

def proportional_splits(n_classes: int) -> Tuple[int, int, int]:
    """Train / val / test class counts in mini-ImageNet's 64 : 16 : 20 proportion."""
    val = max(1, round(n_classes * 0.16))
    test = max(1, round(n_classes * 0.20))
    return n_classes - val - test, val, test


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(description="Build the embedded glyph demo dataset "
                                                 "(mini-ImageNet CSV layout).")
    parser.add_argument("--out", default="demo_data/glyphs", help="output folder")
    parser.add_argument("--n_classes", type=int, default=100)
    parser.add_argument("--images_per_class", type=int, default=30)
    parser.add_argument("--image_size", type=int, default=84)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--splits", type=int, nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                        help="classes per split (default: 64 16 20 scaled to --n_classes)")
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv: Optional[Sequence[str]] = None) -> None:
    """Build the dataset and print one line with the counts and the folder."""
    args = parse_args(argv)
    splits = args.splits or proportional_splits(args.n_classes)
    folder = build_demo_dataset(args.out, args.n_classes, args.images_per_class,
                                args.image_size, args.seed, splits)
    print(f"demo dataset: {args.n_classes} classes ({'/'.join(map(str, splits))} "
          f"train/val/test) x {args.images_per_class} images of {args.image_size}px in {folder}")


if __name__ == "__main__":
    main()
