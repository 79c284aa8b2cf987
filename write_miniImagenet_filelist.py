"""Write the filelists base.json, val.json and novel.json that the loaders read.

Run it inside the dataset folder (no arguments: the mini-ImageNet CSV layout of the current
folder) or point it at one:

    python write_miniImagenet_filelist.py --data_path /data/miniImagenet
    python write_miniImagenet_filelist.py --dataset cifar_fs --data_path /data/cifar100 \\
        --split_dir fewshot_splits
    python write_miniImagenet_filelist.py --dataset cub_cropped --data_path /data/CUB_200_2011 \\
        --out_dir /data/CUB_fewshot_cropped
    python write_miniImagenet_filelist.py --dataset cub --split closerlook --data_path /data/CUB_200_2011 \\
        --out_dir /data/CUB_closerlook
    python write_miniImagenet_filelist.py --dataset folder --data_path /data/dogs \\
        --train_classes train.txt --val_classes val.txt --test_classes test.txt
    python write_miniImagenet_filelist.py --dataset meta_inat --data_path /data/meta_iNat
    python write_miniImagenet_filelist.py --dataset cross_domain --base_from /data/miniImagenet \\
        --eval_from /data/CUB_closerlook --out_dir /data/mini2CUB

The writers live in data/filelists.py; this file only maps the flags onto them.
"""
import argparse
import glob
import os
import sys
from typing import Dict, List, Optional


def _find_repository() -> None:
    """The seed copies this script into the dataset folder and runs it there; that copy finds
    the repository through $FSL_REPO or the AI Studio work folder and imports the writers from it."""
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [here, os.environ.get("FSL_REPO", ""), "/home/aistudio/work"]
    candidates += sorted(glob.glob("/home/aistudio/work/*/"))
    for folder in candidates:
        if folder and os.path.isfile(os.path.join(folder, "data", "filelists.py")):
            sys.path.insert(0, folder)
            return
    print(f"error: {os.path.basename(__file__)} cannot find the repository (data/filelists.py); set "
          f"FSL_REPO=/path/to/repo or run the repository's copy: python /path/to/repo/"
          f"{os.path.basename(__file__)}", file=sys.stderr)
    sys.exit(2)


_find_repository()
from data import filelists  # noqa: E402
from utils.errors import OneLineParser, UserError, exit_on_user_error  # noqa: E402

DATASETS = ("mini_imagenet", "cifar_fs", "fc100", "cub", "cub_cropped", "tiered_imagenet", "cars",
            "aircraft", "omniglot", "meta_inat", "tiered_meta_inat", "cross_domain", "folder")
#: datasets read only from the CSV layout (images/ + train.csv, val.csv, test.csv)
CSV_ONLY = ("mini_imagenet", "omniglot")
#: datasets read from the CSV layout when train.csv is there, else from their own layout
CSV_TOO = ("cifar_fs", "fc100", "cub", "cub_cropped")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--data_path", default=".", help="dataset folder (default: the current folder)")
    add("--dataset", default="mini_imagenet", choices=DATASETS,
        help="dataset layout; mini_imagenet = images/ + train.csv, val.csv, test.csv (the layout of "
             "every shared archive, also accepted for cifar_fs, fc100, cub, cub_cropped, omniglot)")
    add("--split_dir", default=None,
        help="folder of the split files (train/val/test .txt class lists, or cub_feat .csv files); "
             "the root of the fewshot_splits archive works too (default: --data_path)")
    add("--split", default=None, choices=filelists.CUB_SPLITS,
        help="CUB split of the official CUB-200-2011 layout: frn (default; FRN: 1-based class id even -> base, "
             "1 mod 4 -> val, 3 mod 4 -> novel), closerlook (CloserLookFewShot, the Negative-Margin code, "
             "mmfewshot: 0-based position of the sorted class folder even -> base, 1 mod 4 -> val, 3 mod 4 -> "
             "novel) or feat (FEAT/DeepEMD CSVs in --split_dir)")
    add("--out_dir", default=None,
        help="where the json files go (default: --data_path); with cub_cropped or --crop also the "
             "folder of the cropped copies (default: <data_path>/cropped)")
    add("--crop", action="store_true", help="aircraft: crop the images to their bounding boxes")
    add("--image_dir", default=None,
        help="folder-per-class datasets: the folder holding the class folders "
             "(default: --data_path, or its data/ or images/ subfolder)")
    for split in filelists.SPLITS:
        add(f"--{split}_classes", default=None, help=f"file of {split} class names, one per line")
    add("--base_from", default=None,
        help="cross_domain: a folder with filelists whose every class (base, val and novel) is trained on")
    add("--eval_from", default=None,
        help="cross_domain: a folder with filelists whose val.json and novel.json are used")
    return parser.parse_args(argv)


def class_files(args: argparse.Namespace) -> Optional[Dict[str, str]]:
    """The --train/--val/--test_classes files, which go together, or None when none is given."""
    given = {split: getattr(args, f"{split}_classes") for split in filelists.SPLITS}
    if not any(given.values()):
        return None
    missing = [f"--{split}_classes" for split, path in given.items() if not path]
    if missing:
        raise UserError(f"{' and '.join(missing)} missing: --train_classes, --val_classes and "
                        f"--test_classes go together")
    return given


def crop_dir(args: argparse.Namespace, data_path: str) -> str:
    return args.out_dir or os.path.join(data_path, "cropped")


def write(args: argparse.Namespace) -> Dict[str, dict]:
    """Run the writer of `args.dataset`; returns {json path: filelist}."""
    data_path = filelists.dataset_folder(args.data_path)
    dataset = args.dataset
    if args.split is not None and dataset not in ("cub", "cub_cropped"):
        raise UserError(f"--split chooses a CUB class split; --dataset {dataset} has its own, drop --split")
    if dataset == "cross_domain":
        if not (args.base_from and args.eval_from and args.out_dir):
            raise UserError("--dataset cross_domain needs --base_from (the training dataset's filelists folder), "
                            "--eval_from (the test dataset's) and --out_dir")
        return filelists.write_cross_domain(args.base_from, args.eval_from, args.out_dir)
    if dataset in ("meta_inat", "tiered_meta_inat"):
        return filelists.write_meta_inat(data_path, args.out_dir)
    if dataset in CSV_ONLY or (dataset in CSV_TOO and filelists.has_csv_layout(data_path)):
        if args.split is not None:
            raise UserError(f"--split {args.split} needs the official CUB-200-2011 layout (images/, images.txt, "
                            f"classes.txt); {data_path} is in the CSV layout, whose train/val/test.csv fix the "
                            f"split: drop --split or point --data_path at CUB_200_2011")
        return filelists.write_csv_layout(data_path, args.out_dir)
    if dataset in ("cub", "cub_cropped"):
        crops = crop_dir(args, data_path) if dataset == "cub_cropped" else None
        return filelists.write_cub(data_path, args.split or "frn", args.split_dir, crops, args.out_dir)
    if dataset == "tiered_imagenet" or (dataset == "fc100" and filelists.has_split_folders(data_path)):
        return filelists.write_tiered_imagenet(data_path, args.out_dir)
    if dataset == "aircraft" and filelists.aircraft_root(data_path):
        crops = crop_dir(args, data_path) if args.crop else None
        return filelists.write_aircraft(data_path, crops, args.out_dir)
    if args.crop:
        raise UserError(f"--crop needs the official FGVC-Aircraft layout (data/variants.txt, "
                        f"images_box.txt) in --data_path {data_path}; drop --crop for class folders")
    return filelists.write_class_folders(data_path, class_files(args), args.split_dir,
                                         filelists.SPLIT_SUBFOLDERS.get(dataset, ""), args.out_dir,
                                         args.image_dir)


@exit_on_user_error
def main(argv: Optional[List[str]] = None) -> None:
    """Write the filelists and print one summary line per split."""
    lists = write(parse_args(argv))
    print(f"filelists written to {os.path.dirname(next(iter(lists)))}")
    for path, meta in lists.items():
        print(f"{os.path.basename(path)}: {len(meta['label_names'])} classes, "
              f"{len(meta['image_names'])} images")


if __name__ == "__main__":
    main()
