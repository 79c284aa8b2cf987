"""Command-line flags of the entry points.

The common flags keep the names and defaults of the seed (the Paddle FRN reproduction this
project started from, DeepBDC family); the chosen method adds its own from its typed options
(methods/base.py `MethodOptions`), which `--help` lists too. Wrong values stop with one line
naming the flag.
"""
import argparse
import os
import sys
from typing import List, Optional, Type

from data.transforms import DATASET_TRANSFORMS
from frn.feature_store import DEFAULT_RAM_GB
from utils.errors import OneLineParser, UserError
from methods import METHODS
from methods.base import FewShotMethod, MethodOptions
from utils.flags import add_aliases
from utils.options import add_options, options_from_args
from network import BACKBONES


def _common(parser: argparse.ArgumentParser, method_default: str, n_shot: int) -> None:
    add = parser.add_argument
    add("--dataset", default="mini_imagenet", choices=sorted(DATASET_TRANSFORMS),
        help="dataset name: picks the official transforms (custom: your own images, ImageNet-style "
             "transforms at --image_size) and the run folder <checkpoint_dir>/<dataset>/<run> "
             "(custom: <checkpoint_dir>/custom/<data folder's name>/<run>)")
    add("--data_path", default="", help="dataset folder holding base.json/val.json/novel.json")
    add("--model", default="ResNet12", choices=sorted(BACKBONES), help="backbone")
    add("--method", default=method_default, choices=sorted(METHODS), help="few-shot method")
    add("--image_size", type=int, default=84)
    add("--gpu", action="store_true", help="use the GPU if Paddle has CUDA (else CPU, with a notice)")
    add("--seed", type=int, default=0, help="seeds weights, augmentation and episodes")
    add("--n_shot", type=int, default=n_shot, help="support images per class")
    add("--n_query", type=int, default=15, help="query images per class")
    add("--num_workers", type=int, default=2, help="DataLoader worker processes")
    add("--no_shared_memory", action="store_true",
        help="worker processes pickle batches through a pipe instead of handing them over in /dev/shm "
             "(shared memory is used when /dev/shm has room)")
    add("--threads", type=int, default=0,
        help="CPU threads of Paddle's math (0: $OMP_NUM_THREADS or $MKL_NUM_THREADS when set, else every "
             "available core)")
    add("--no_feature_cache", action="store_true",
        help="evaluate with one backbone pass per episode instead of caching each image's features")
    add("--feature_cache_gb", type=float, default=DEFAULT_RAM_GB,
        help="the evaluation feature cache stays in RAM up to this size; a larger one (tiered-ImageNet) "
             "goes to a temporary file in $TMPDIR, read back episode by episode (never on the GPU)")
    add("--checkpoint_dir", default="./checkpoints", help="runs are written below this folder")
    add("--config", default=None, help="a paper-row config (configs/<method>/<row>.yaml): its flags for this "
                                      "script, the command line's on top")
    add("--stage", dest="config_stage", default=None, help="which of the config's stages for this script (when it has several)")


def _training(parser: argparse.ArgumentParser, lr: float, epoch: int, milestones: List[int]) -> None:
    add = parser.add_argument
    add("--lr", type=float, default=lr)
    add("--wd", type=float, default=5e-4, help="L2 weight decay on every trainable parameter")
    add("--gamma", type=float, default=0.1, help="LR decay factor")
    add("--milestones", type=int, nargs="*", default=milestones, help="epochs at which the LR decays")
    add("--step_size", type=int, default=0,
        help="decay every N epochs instead of at --milestones (the official FRN fine-grained configs)")
    add("--epoch", type=int, default=epoch, help="number of epochs")
    add("--pretrain_path", default="", help=".pdparams to start from (for meta_train.py: pretrain.py's output)")
    add("--lr_schedule", default="step", choices=["step", "cosine"],
        help="step: decay by --gamma at --milestones / every --step_size epochs; cosine: per iteration "
             "down to --eta_min after the warm-up")
    add("--warmup_iters", type=int, default=0, help="linear LR warm-up over this many iterations (0: none)")
    add("--warmup_epochs", type=int, default=0, help="the same warm-up counted in epochs")
    add("--warmup_start", type=float, default=0.1,
        help="the warm-up starts at this fraction of --lr (mmfewshot 0.25, Negative-Margin code 1/16)")
    add("--eta_min", type=float, default=0.0, help="final learning rate of --lr_schedule cosine")
    add("--lr_lag", type=int, default=0,
        help="use the per-iteration schedule's value of N iterations earlier (1: as a reference that steps "
             "its scheduler after the optimiser)")
    add("--optimizer", default="sgd", choices=["sgd", "adam"])
    add("--momentum", type=float, default=0.9, help="SGD momentum")
    add("--no_nesterov", action="store_true", help="plain momentum instead of Nesterov")
    add("--val_n_way", type=int, default=5)
    add("--val_n_episode", type=int, default=600)
    add("--val_n_query", type=int, default=None,
        help="query images per class of the validation episodes (default: --n_query; the official FRN "
             "validation uses 16 while training episodes have 15)")
    add("--val_freq", type=int, default=1, help="validate after every N-th epoch (epochs N, 2N, ... counted from 1) "
                                                "and after the last")
    add("--save_freq", type=int, default=50, help="also keep <epoch>.pdparams every N epochs")
    add("--resume", default="", help="run folder (or its resume.pdstate) to continue")
    add("--overwrite", action="store_true",
        help="start afresh in a run folder that holds an earlier run (its checkpoints, log and curves are removed)")
    add("--run_name", default="",
        help="name of the run folder (default: from model, method and settings), below "
             "<checkpoint_dir>/<dataset>/ (custom: <checkpoint_dir>/custom/<data folder's name>/)")
    add("--train_n_way", type=int, default=20, help="classes per training episode")
    add("--quiet", action="store_true", help="only write output.log, print nothing per epoch")
    add("--visualdl", default="", metavar="DIR",
        help="also log loss, accuracy, learning rate and validation for VisualDL below DIR (view: "
             "visualdl --logdir DIR; needs pip install visualdl)")
    add("--stop_th", type=int, default=0,
        help="stop early once this many validation scores in a row fell (0: never; SimTrans: 10)")


def pretrain_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="pretrain.py", description="Whole-class (pre-)training of a backbone and head.")
    parser.set_defaults(stage="pretrain")
    _common(parser, "stl_frn", n_shot=1)
    _training(parser, lr=0.05, epoch=150, milestones=[80, 120])
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--num_classes", type=int, default=0,
                        help="classifier size (default: the number of base classes)")
    parser.add_argument("--val", default="meta", choices=["meta", "none"],
                        help="validate by few-shot episodes on val.json (non-episodic methods: by their "
                             "own score), or not at all")
    return parser


def meta_train_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="meta_train.py", description="Episodic meta-training.")
    parser.set_defaults(stage="meta_train")
    _common(parser, "meta_frn", n_shot=5)
    _training(parser, lr=1e-3, epoch=150, milestones=[70, 120])
    parser.add_argument("--train_n_episode", type=int, default=1000,
                        help="episodes per epoch; 0 = the official FRN epoch (use every image once)")
    parser.add_argument("--ht_meta_batch", type=int, default=0,
                        help="hard-task meta-batch (the MTL paper's HT; ours): after every N tasks, train on "
                             "--ht_hard_tasks tasks re-sampled from their worst classes (0 = off)")
    parser.add_argument("--ht_hard_tasks", type=int, default=1, help="hard tasks after each HT meta-batch")
    return parser


def test_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="test.py", description="Few-shot evaluation on the novel classes.")
    parser.set_defaults(stage="test")
    _common(parser, "meta_frn", n_shot=1)
    add = parser.add_argument
    add("--test_n_way", type=int, default=5)
    add("--test_n_episode", type=int, default=600)
    add("--test_task_nums", type=int, default=1, help="independent tasks of --test_n_episode episodes")
    add("--model_path", default="", help="checkpoint to test")
    add("--split", default="novel", choices=["base", "val", "novel", "web", "base_test"],
        help="which filelist to test on (web, base_test: weak-shot folders of data/weakshot.py)")
    add("--save_episodes", default="", help="write the drawn episodes to this JSON file")
    add("--episodes_file", default="", help="test on exactly the episodes of this JSON file")
    add("--result_file", default="",
        help="JSON list each tested task's result is appended to (default: results.json beside --model_path; "
             "none: no file)")
    add("--save_predictions", default="", help="write every query's prediction to this CSV file (task, episode, "
                                               "image, label, prediction, score = its softmax probability)")
    return parser


def _deployment(parser: argparse.ArgumentParser) -> None:
    """Flags of predict.py and export.py: the model as test.py builds it, the support set, batching.
    They run the method as at test time, so they offer test.py's method flags and defaults."""
    parser.set_defaults(stage="test")
    add = parser.add_argument
    add("--method", default="meta_frn", choices=sorted(METHODS), help="few-shot method of the checkpoint")
    add("--model", default="ResNet12", choices=sorted(BACKBONES), help="backbone of the checkpoint")
    add("--model_path", default="", help="the trained .pdparams checkpoint")
    add("--dataset", default="mini_imagenet", choices=sorted(DATASET_TRANSFORMS),
        help="picks the evaluation transform (as in training) unless the method has its own")
    add("--image_size", type=int, default=84, help="input size, as in training")
    add("--support", default="", help="a folder with one sub-folder of images per class, a CSV file of path,label "
                                      "rows, or a .pdsupport file written by predict.py --save_support")
    add("--batch_size", type=int, default=64, help="images per backbone pass")
    add("--num_workers", type=int, default=2, help="DataLoader worker processes")
    add("--gpu", action="store_true", help="use the GPU if Paddle has CUDA (else CPU, with a notice)")
    add("--seed", type=int, default=0, help="seeds the test-time fits that draw random numbers (Neg-Margin, DeepEMD)")


def predict_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="predict.py", description="Classify your own images against a support set of "
                                                          "your own classes.")
    _deployment(parser)
    add = parser.add_argument
    add("--query", nargs="*", default=[], help="image files, folders (searched recursively) or glob patterns")
    add("--out", default="predictions.csv", help="CSV to write (image,prediction,score,<probability per class>); "
                                                 "- for stdout")
    add("--top_k", type=int, default=1, help="also list the 2nd..k-th classes and their probabilities")
    add("--save_support", default="", help="write the adapted support set to this .pdsupport file for reuse")
    return parser


def export_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="export.py", description="Export a static model (paddle.jit.save) with the adapted "
                                                         "support set frozen inside, for infer.py / Paddle Inference.")
    _deployment(parser)
    add = parser.add_argument
    add("--out_dir", required=True, help="folder to write the model, its parameters and classes.json into")
    add("--backbone_only", action="store_true", help="export the feature extractor alone (no support set)")
    return parser


def method_of(argv: Optional[List[str]], default: str) -> str:
    """The --method of a command line, read before the full parse so that the method's own
    flags are known even to --help (an unknown name is left for the full parse to reject)."""
    finder = argparse.ArgumentParser(add_help=False)
    finder.add_argument("--method", default=default)
    known, _ = finder.parse_known_args(argv)
    return known.method


def add_method_options(parser: argparse.ArgumentParser, method: Type[FewShotMethod]) -> None:
    """The method's own flags (with help and defaults), its defaults of common flags and its
    official spellings, for the entry point `parser` serves."""
    stage = parser.get_default("stage")
    parser.set_defaults(**method.Options.shared_defaults(stage))
    add_options(parser, method.Options, stage)
    add_aliases(parser, method.Options.aliases(stage))


def with_config(parser: argparse.ArgumentParser, argv: Optional[List[str]]) -> List[str]:
    """`--config F [--stage S]`: the flags of that config's stage for this entry script, then the
    rest of the command line (which overrides them)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    finder = argparse.ArgumentParser(add_help=False)
    finder.add_argument("--config", default=None)
    finder.add_argument("--stage", default=None)
    known, rest = finder.parse_known_args(argv)
    if known.config is None:
        if known.stage is not None:
            raise UserError("--stage picks a stage of --config; pass the config too")
        return argv
    from frn.configs import config_argv
    return config_argv(known.config, parser.prog, known.stage) + rest


def parse(parser: argparse.ArgumentParser, argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse an entry point's command line (or a config's stage, `--config F`, with the command
    line's flags on top): common flags plus the chosen method's own; the method's typed options
    land in `args.options` (validated, one-line errors)."""
    argv = with_config(parser, argv)
    name = method_of(argv, parser.get_default("method"))
    if name in METHODS:
        add_method_options(parser, METHODS[name])
    args = parser.parse_args(argv)
    check(args)
    args.options = method_options(args)
    return args


def method_options(args: argparse.Namespace, **overrides) -> MethodOptions:
    """The typed options of `args.method` from parsed flags (shared settings included), checked."""
    stage = getattr(args, "stage", "test")
    way = {"pretrain": "val_n_way", "meta_train": "train_n_way", "test": "test_n_way"}.get(stage, "test_n_way")
    shared = {"way": getattr(args, way, 5), "val_way": getattr(args, "val_n_way", 5)}
    options = options_from_args(METHODS[args.method].Options, args, **{**shared, **overrides})
    options.check()
    return options


def check(args: argparse.Namespace) -> None:
    """Value checks argparse cannot express; one line per problem."""
    positive = ["n_shot", "n_query", "val_n_query", "image_size", "epoch", "batch_size", "train_n_way", "val_n_way",
                "test_n_way", "val_n_episode", "test_n_episode", "test_task_nums", "val_freq", "save_freq"]
    for name in positive:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UserError(f"--{name} must be at least 1 (got {value})")
    if args.image_size < 16:
        raise UserError(f"--image_size must be at least 16 (the backbones pool four times); got {args.image_size}")
    if getattr(args, "lr", 1) <= 0:
        raise UserError(f"--lr must be positive (got {args.lr})")
    if getattr(args, "num_workers", 0) < 0:
        raise UserError("--num_workers must be >= 0")
    if getattr(args, "feature_cache_gb", 0) < 0:
        raise UserError(f"--feature_cache_gb must be >= 0 (0: always a file; got {args.feature_cache_gb})")
    if getattr(args, "threads", 0) < 0:
        raise UserError(f"--threads must be >= 0 (0: every available core; got {args.threads})")
    for name in ("warmup_iters", "warmup_epochs", "lr_lag", "eta_min"):
        if getattr(args, name, 0) < 0:
            raise UserError(f"--{name} must be >= 0 (got {getattr(args, name)})")
    if getattr(args, "warmup_iters", 0) and getattr(args, "warmup_epochs", 0):
        raise UserError("give the warm-up once: --warmup_iters or --warmup_epochs, not both")
    if not 0 < getattr(args, "warmup_start", 1.0) <= 1:
        raise UserError(f"--warmup_start must be in (0, 1] (got {args.warmup_start})")
    if getattr(args, "ht_meta_batch", 0) < 0 or getattr(args, "ht_hard_tasks", 1) < 1:
        raise UserError(f"--ht_meta_batch must be >= 0 (0 = off) and --ht_hard_tasks >= 1 "
                        f"(got {args.ht_meta_batch}, {args.ht_hard_tasks})")
    if getattr(args, "resume", "") and getattr(args, "overwrite", False):
        raise UserError("--resume continues a run, --overwrite starts it afresh: pass one of them")
    run_name = getattr(args, "run_name", "")
    if run_name and (run_name in (".", "..") or os.sep in run_name or "/" in run_name):
        raise UserError(f"--run_name {run_name!r} must be a plain folder name (no '/')")
    if getattr(args, "momentum", 0) < 0:
        raise UserError(f"--momentum must be >= 0 (got {args.momentum})")
