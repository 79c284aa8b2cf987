"""The few-shot workflow behind pretrain.py, meta_train.py and test.py: whole-class training on
base.json, episodic training, episodic evaluation on the novel classes. A method whose workflow
is "weak_shot" (SimTrans) is handed to frn/weakshot.py instead.

Everything that can fail on user input (flags, data, checkpoints) is checked before anything is
written, so a failed run never touches an earlier run's files.
"""
import argparse
import csv
import io
import os
import time
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import paddle

from data.datasets import ImageList, filelist_path
from data.episodes import load_episodes, save_episodes
from frn.hard_tasks import HardTaskEpisodes
from data.samplers import (EpisodeSampler, PoolEpisodeSampler, ShuffledBatchSampler, check_episode_fits,
                           indices_by_class)
from data.transforms import eval_transform, train_transform
from frn.checkpoint import load_weights, read_checkpoint
from frn.engine import (TrainState, allow_shared_memory, episode_step, evaluate, loader, resume_path, train,
                        whole_class_step)
from frn.log import RunLog, ScalarLog
from frn.results import append_result, check_result_file, result_path, run_description, sha256, task_record
from methods import METHODS
from methods.base import FewShotMethod, MethodOptions
from network import build_backbone
from utils.device import cpu_threads, epoch_seed, rank_and_world, seed_everything, select_device
from utils.errors import UserError
from utils.files import check_output_file, write_atomically
from utils.optim import build_optimizer, build_scheduler
from utils.stats import mean_and_interval, softmax


def build_model(options: MethodOptions, num_classes: Optional[int] = None) -> FewShotMethod:
    """The method `options.method` on the backbone `options.model` (with a whole-class head when
    `num_classes` is given)."""
    method = METHODS[options.method]
    backbone = build_backbone(options.model, **method.backbone_options(options, num_classes))
    return method(backbone, options, num_classes)


def image_pipeline(options: MethodOptions, training: bool) -> Callable:
    """The method's own image pipeline, else the dataset's standard one (training or evaluation)."""
    transform = METHODS[options.method].image_transform(options, training)
    if transform is None:
        transform = (train_transform if training else eval_transform)(options.dataset, options.image_size)
    return transform


def image_list(args: argparse.Namespace, split: str, training: bool) -> ImageList:
    """The images of `split` (a filelist of --data_path) with `image_pipeline`."""
    return ImageList(filelist_path(args.data_path, split), image_pipeline(args.options, training))


def validation_queries(args: argparse.Namespace) -> int:
    """Query images per class of the validation episodes: --val_n_query, else --n_query."""
    value = getattr(args, "val_n_query", None)
    return args.n_query if value is None else value


def val_episodes(args: argparse.Namespace, dataset: ImageList) -> List[List[int]]:
    """The fixed validation episodes (same every epoch and every run of a seed)."""
    return list(EpisodeSampler(dataset.labels, args.val_n_way, args.n_shot, validation_queries(args),
                               args.val_n_episode, seed=args.seed, split="val"))


def data_folder_name(data_path: str) -> str:
    """The data folder's own name, the last part of --data_path ("my_flowers" for
    /data/my_flowers/): it names the runs of a custom dataset."""
    return os.path.basename(os.path.normpath(os.path.abspath(data_path))) if data_path else "no_data_path"


def run_folder(args: argparse.Namespace, name: str) -> str:
    """Where a training run writes: <checkpoint_dir>/<dataset>/<name> for the named benchmarks (the
    folders the seed's commands pass from one stage to the next), and
    <checkpoint_dir>/custom/<data folder's name>/<name> for `--dataset custom`, so that two custom
    datasets never share a folder. A second data folder under a benchmark's name meets the run
    of the first one and is refused in one line (`check_run_folder`): pass --run_name."""
    if args.dataset == "custom":
        return os.path.join(args.checkpoint_dir, "custom", data_folder_name(args.data_path), name)
    return os.path.join(args.checkpoint_dir, args.dataset, name)


def training_run_folder(args: argparse.Namespace) -> str:
    """The folder a pretrain.py or meta_train.py run writes (see `run_folder`), named after what
    trains differently: <Model>_<method's run name>_pretrain,
    <Model>_<run name>[_ht<N>]_<way>way_<shot>shot_metatrain, or for a weak-shot step
    <Model>_<run name>; `--run_name NAME` names it NAME instead."""
    options = args.options
    if getattr(args, "run_name", ""):
        return run_folder(args, args.run_name)
    if args.stage == "meta_train":
        ht = f"_ht{args.ht_meta_batch}" if args.ht_meta_batch else ""
        return run_folder(args, f"{options.model}_{options.run_name()}{ht}_{args.train_n_way}way_{args.n_shot}shot_metatrain")
    suffix = "" if weak_shot(args) else "_pretrain"
    return run_folder(args, f"{options.model}_{options.run_name()}{suffix}")


#: what a training run writes in its folder (--overwrite removes an earlier run's)
RUN_FILES = ("output.log", "history.json", "curves.png")
CHECKPOINT_SUFFIXES = (".pdparams", ".pdstate")


def checkpoints_in(folder: str) -> List[str]:
    """The checkpoint files (.pdparams, .pdstate) directly inside `folder`."""
    if not os.path.isdir(folder):
        return []
    return sorted(name for name in os.listdir(folder) if name.endswith(CHECKPOINT_SUFFIXES))


def same_folder(a: str, b: str) -> bool:
    return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def check_run_folder(args: argparse.Namespace, run_dir: str) -> None:
    """Refuse, in one line, a new run into a folder that holds an earlier run's checkpoints:
    nothing is overwritten unless --overwrite is given; --resume continues the run it names.
    Checked before the run writes anything (after the checks of flags and data, whose errors
    say more)."""
    if args.resume:
        resumed = args.resume if os.path.isdir(args.resume) else os.path.dirname(args.resume) or "."
        if same_folder(resumed, run_dir):
            return
    found = checkpoints_in(run_dir)
    if found and not args.overwrite:
        raise UserError(f"{run_dir} holds the checkpoints of an earlier run ({', '.join(found[:3])}"
                        f"{', ...' if len(found) > 3 else ''}); continue it with --resume {run_dir}, start it "
                        f"afresh with --overwrite, or give this run another name with --run_name NAME")


def clear_run_folder(run_dir: str) -> None:
    """Remove an earlier run's checkpoints, log, history and curves (--overwrite), so that none
    of them is mistaken for the new run's."""
    for name in checkpoints_in(run_dir) + [n for n in RUN_FILES if os.path.isfile(os.path.join(run_dir, n))]:
        os.remove(os.path.join(run_dir, name))


def build_training(args: argparse.Namespace, model: FewShotMethod, iters_per_epoch: int = 0):
    """Optimiser and LR schedule of the flags; a warm-up or cosine schedule runs per iteration
    (and needs the epoch's length, `iters_per_epoch`)."""
    scheduler = build_scheduler(args.lr, args.gamma, milestones=None if args.step_size else args.milestones,
                                step_size=args.step_size or None, iters_per_epoch=iters_per_epoch,
                                epochs=args.epoch,
                                warmup_iters=args.warmup_iters or args.warmup_epochs * iters_per_epoch,
                                warmup_start=args.warmup_start, cosine=args.lr_schedule == "cosine",
                                eta_min=args.eta_min, lag=args.lr_lag)
    optimizer = build_optimizer(model, scheduler, args.optimizer, args.wd, momentum=args.momentum,
                                nesterov=not args.no_nesterov, groups=model.parameter_groups(args.lr))
    return optimizer, scheduler


def resume_state(args: argparse.Namespace, model: FewShotMethod, optimizer, scheduler) -> TrainState:
    """Restore a run from `--resume` (a run folder or its resume.pdstate), or start fresh."""
    if not args.resume:
        return TrainState()
    path = resume_path(args.resume) if os.path.isdir(args.resume) else args.resume
    ckpt = read_checkpoint(path, "--resume")
    if "optimizer" not in ckpt:
        raise UserError(f"--resume {args.resume} is not a resume state; pass the run folder or its resume.pdstate")
    if ckpt.get("identity") != model.checkpoint_identity():
        raise UserError(f"--resume {args.resume} belongs to a {ckpt['identity']} run, not to "
                        f"{model.checkpoint_identity()}; check --model/--method")
    model.set_state_dict(ckpt["model"])
    optimizer.set_state_dict(ckpt["optimizer"])
    scheduler.set_state_dict(ckpt["scheduler"])
    return TrainState(ckpt["epoch"], ckpt["best_acc"], ckpt["best_epoch"], ckpt["history"])


Batches = Callable[[int], Tuple[object, int]]


def run_training(args: argparse.Namespace, model: FewShotMethod, run_dir: str, make_batches: Batches,
                 validate, step=whole_class_step, before_epoch=None, optimizer_and_schedule=None) -> None:
    """Shared tail of every training stage: optimizer, resume, log, epoch loop.

    `make_batches(epoch)` returns (the epoch's batches, their number); the LR schedule takes
    epoch 0's number as every epoch's length (an upper bound for the official FRN epoch). The
    batches depend only on (seed, epoch), so building epoch 0's here changes nothing."""
    check_run_folder(args, run_dir)
    _, iters_per_epoch = make_batches(0)
    optimizer, scheduler = optimizer_and_schedule or build_training(args, model, iters_per_epoch)
    state = resume_state(args, model, optimizer, scheduler)
    rank, world = rank_and_world()  # initialised already by the workflow, before the model was built
    net = paddle.DataParallel(model) if world > 1 else model
    validate = validated_once(validate, rank, world)
    if args.overwrite and not args.resume and rank == 0:
        clear_run_folder(run_dir)
    log = RunLog(run_dir if rank == 0 else os.path.join(run_dir, f"rank{rank}"), quiet=args.quiet or rank != 0)
    settings = {k: v for k, v in vars(args).items() if k != "options"}
    settings["threads"] = (cpu_threads() or (None,))[0]  # the CPU threads in use, not the flag's 0
    log(f"{'resuming at epoch %d' % state.epoch if state.epoch else 'start'}: {settings}")
    scalars = ScalarLog(visualdl_folder(args, run_dir) if rank == 0 else "", log)
    try:
        state = train(net, make_batches, optimizer, scheduler, validate, state, args, run_dir, log, step,
                      before_epoch, scalars=scalars if scalars.writer is not None else None)
    finally:
        scalars.close()
    log(f"done: best val acc {state.best_acc:.2f} at epoch {state.best_epoch}; checkpoints in {run_dir}")


def validated_once(validate, rank: int, world: int):
    """`validate` for a multi-process run, giving every rank the same result, so that the
    best-model bookkeeping and the early-stop decision (--stop_th) cannot differ between ranks:
    a rank that stopped alone would leave the others waiting in the next all-reduce.

    A validator that shares its result itself (`validate.same_on_every_rank`, e.g. the episodic
    one, sharded) is used as it is. Any other runs on every rank, as in a single process, and
    rank 0's result is broadcast: every rank does the same work, so no rank waits long in the
    broadcast (gloo, the CPU backend, gives up after 30 s). Unchanged in a single-process run."""
    if validate is None or world < 2 or getattr(validate, "same_on_every_rank", False):
        return validate

    def rank_0_result():
        result = [validate()]
        paddle.distributed.broadcast_object_list(result, src=0)
        return result[0]
    return rank_0_result


def visualdl_folder(args: argparse.Namespace, run_dir: str) -> str:
    """Where a run's VisualDL scalars go: below --visualdl DIR, the run folder's path below
    --checkpoint_dir (<dataset>/<data folder>/<run>), so that `visualdl --logdir DIR` lists
    every run by name; "" without --visualdl."""
    if not getattr(args, "visualdl", ""):
        return ""
    return os.path.join(args.visualdl, os.path.relpath(os.path.abspath(run_dir), os.path.abspath(args.checkpoint_dir)))


def episode_validator(args: argparse.Namespace, model: FewShotMethod):
    """A function returning (val acc, val loss) on the fixed validation episodes.

    In a multi-process run the episodes are sharded: each rank scores a contiguous share and the
    per-episode accuracies are gathered in order, so every rank returns the same numbers (the
    accuracy bit for bit a single process's; the loss a count-weighted mean of the shares'
    means) and takes part of the work."""
    val = image_list(args, "val", training=False)
    episodes = val_episodes(args, val)
    rank, world = paddle.distributed.get_rank(), paddle.distributed.get_world_size()
    mine = episodes[rank * len(episodes) // world:(rank + 1) * len(episodes) // world]

    def validate():
        accs, loss = np.zeros(0), 0.0
        if mine:
            accs, loss = evaluate(model, val, mine, args.val_n_way, args.n_shot, validation_queries(args),
                                  use_cache=not args.no_feature_cache, num_workers=args.num_workers, desc="val",
                                  cache_ram_gb=args.feature_cache_gb)
        if world == 1:
            return float(accs.mean()), loss
        shares: list = []
        paddle.distributed.all_gather_object(shares, (accs, loss * len(mine)))
        every = np.concatenate([share_accs for share_accs, _ in shares])
        return float(every.mean()), sum(loss_sum for _, loss_sum in shares) / len(every)
    validate.same_on_every_rank = True
    return validate


def weak_shot(args: argparse.Namespace) -> bool:
    return METHODS[args.method].workflow == "weak_shot"


def preflight(args: argparse.Namespace, produced: Sequence[str] = ()) -> None:
    """Check what a stage reads from outside its config's runs before any stage writes (the config
    runner, frn/configs.py): the few-shot stages read only their data and earlier stages' models,
    which they check themselves; a weak-shot step also needs its ImageNet start."""
    if weak_shot(args):
        from frn import weakshot
        weakshot.preflight(args, produced)


def pretrain(args: argparse.Namespace) -> None:
    """Whole-class training on base.json in shuffled batches (each rank of a multi-process run
    takes its share, data.samplers.rank_share), validated by few-shot episodes on val.json."""
    if weak_shot(args):
        from frn import weakshot
        return weakshot.train(args)
    rank, world = rank_and_world()
    select_device(args.gpu, args.threads)
    allow_shared_memory(not args.no_shared_memory)
    seed_everything(args.seed)
    base = image_list(args, "base", training=True)
    if args.batch_size > len(base):
        raise UserError(f"--batch_size {args.batch_size} exceeds the {len(base)} base images; lower it")
    if args.num_classes and args.num_classes < base.num_classes:
        raise UserError(f"--num_classes {args.num_classes} is smaller than the {base.num_classes} training "
                        f"classes; drop the flag or raise it")
    model = build_model(args.options, args.num_classes or base.num_classes)
    if args.pretrain_path:
        load_weights(model, args.pretrain_path, "--pretrain_path")
    validate = episode_validator(args, model) if args.val == "meta" else None
    sampler = ShuffledBatchSampler(len(base), args.batch_size, seed=args.seed, rank=rank, world=world)

    def make_batches(epoch):
        sampler.set_epoch(epoch)
        return loader(base, sampler, args.num_workers), len(sampler)

    run_training(args, model, training_run_folder(args), make_batches, validate)


def meta_train(args: argparse.Namespace) -> None:
    """Episodic training on base.json (optionally from pretrained weights)."""
    if not METHODS[args.method].trains_episodically:
        raise UserError(f"--method {args.method} has no episodic training stage; train it with pretrain.py")
    rank, world = rank_and_world()
    select_device(args.gpu, args.threads)
    allow_shared_memory(not args.no_shared_memory)
    seed_everything(args.seed)
    base = image_list(args, "base", training=True)
    model = build_model(args.options)
    if args.pretrain_path:
        load_weights(model, args.pretrain_path, "--pretrain_path", pretrained=True)
    validate = episode_validator(args, model)
    shape = (args.train_n_way, args.n_shot, args.n_query)
    if args.train_n_episode:
        check_episode_fits(indices_by_class(base.labels), *shape, "base")  # before anything is written

        def regular_batches(epoch):
            sampler = EpisodeSampler(base.labels, *shape, args.train_n_episode, seed=epoch_seed(args.seed, epoch),
                                     rank=rank, world=world, split="base")
            return loader(base, sampler, args.num_workers), len(sampler)
    else:  # the official FRN epoch: every base image at most once
        pool = PoolEpisodeSampler(base.labels, *shape, seed=args.seed, split="base", rank=rank, world=world)

        def regular_batches(epoch):
            pool.set_epoch(epoch)
            return loader(base, pool, args.num_workers), len(pool)

    def make_batches(epoch):
        batches, n_batches = regular_batches(epoch)
        if not args.ht_meta_batch:
            return batches, n_batches
        hard = HardTaskEpisodes(batches, n_batches, base, *shape, args.ht_meta_batch, args.ht_hard_tasks,
                                seed=(args.seed, epoch, rank))
        return hard, len(hard)

    run_training(args, model, training_run_folder(args), make_batches, validate, step=episode_step(*shape))


class EpisodePredictions:
    """The rows of test.py --save_predictions: task, episode, image, label, prediction, score (the
    softmax probability of the prediction), one row per query of every episode."""

    HEADER = ("task", "episode", "image", "label", "prediction", "score")

    def __init__(self, dataset: ImageList):
        self.dataset = dataset
        self.rows: List[Tuple] = []

    def hook(self, task: int, episodes: List[List[int]], way: int, shot: int) -> Callable:
        """An `on_scores` hook for `evaluate` on these episodes."""
        names, labels, files = self.dataset.label_names, self.dataset.labels, self.dataset.file_names
        done = [0]

        def on_scores(scores) -> None:
            for episode_scores in scores:
                episode = episodes[done[0]]
                classes = [names[labels[episode[c * shot]]] for c in range(way)]
                probabilities = softmax(episode_scores)
                for index, p in zip(episode[way * shot:], probabilities):
                    best = int(p.argmax())
                    self.rows.append((task, done[0], files[index], names[labels[index]], classes[best],
                                      f"{p[best]:.6f}"))
                done[0] += 1
        return on_scores

    def write(self, path: str) -> None:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.HEADER)
        writer.writerows(self.rows)
        write_atomically(path, out.getvalue().encode("utf-8"))


def test(args: argparse.Namespace) -> List[float]:
    """Few-shot test; prints one `N Test Acc = m% +- ci%` line per task and the mean over tasks,
    appends each task's record to the result file (frn/results.py) and with --save_predictions
    writes every query's prediction."""
    if weak_shot(args):
        from frn import weakshot
        return weakshot.test(args)
    select_device(args.gpu, args.threads)
    allow_shared_memory(not args.no_shared_memory)
    seed_everything(args.seed)
    if not args.model_path:
        raise UserError("--model_path is required: the .pdparams checkpoint to test")
    results = result_path(args)
    check_result_file(results)
    if args.save_predictions:
        check_output_file(args.save_predictions, "--save_predictions")
    dataset = image_list(args, args.split, training=False)
    model = build_model(args.options)
    load_weights(model, args.model_path)
    if args.episodes_file:
        tasks = [load_episodes(args.episodes_file, dataset)]
    else:
        tasks = [(list(EpisodeSampler(dataset.labels, args.test_n_way, args.n_shot, args.n_query,
                                      args.test_n_episode, seed=args.seed + t, split=args.split)),
                  args.test_n_way, args.n_shot, args.n_query) for t in range(args.test_task_nums)]
    if args.save_episodes:
        episodes, way, shot, query = tasks[0]
        save_episodes(args.save_episodes, episodes, dataset, way, shot, query, split=args.split)
    shared = run_description(args, sha256(args.model_path)) if results else {}
    predictions = EpisodePredictions(dataset) if args.save_predictions else None
    means = []
    for task, (episodes, way, shot, query) in enumerate(tasks):
        start = time.time()
        hook = predictions.hook(task, episodes, way, shot) if predictions else None
        accs, _ = evaluate(model, dataset, episodes, way, shot, query, use_cache=not args.no_feature_cache,
                           num_workers=args.num_workers, desc="test", on_scores=hook,
                           cache_ram_gb=args.feature_cache_gb)
        mean, interval = mean_and_interval(accs)
        print(f"{len(accs)} Test Acc = {mean:.2f}% +- {interval:.2f}%", flush=True)
        means.append(mean)
        if results:
            append_result(results, task_record(
                shared, accuracy=float(mean), interval=float(interval), episodes=len(accs), way=way, shot=shot,
                query=query, split=args.split, seed=args.seed + task, task=task,
                episodes_file=args.episodes_file or None, wall_seconds=round(time.time() - start, 3)))
    if len(means) > 1:
        print(f"Mean over {len(means)} tasks: {sum(means) / len(means):.2f}%")
    if predictions:
        predictions.write(args.save_predictions)
    if results:
        print(f"results appended to {results}")
    return means
