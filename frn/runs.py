"""The three workflows behind pretrain.py, meta_train.py and test.py.

Everything that can fail on user input (flags, data, checkpoints) is checked before anything is
written, so a failed run never touches an earlier run's files.
"""
import argparse
import os
from typing import List, Optional

import paddle

from data.datasets import ImageList
from data.hard_tasks import HardTaskEpisodes
from data.episodes import load_episodes, save_episodes
from data.samplers import EpisodeSampler, PoolEpisodeSampler, check_episode_fits, indices_by_class
from frn.checkpoint import load_weights, read_checkpoint
from utils.device import epoch_seed, rank_and_world, seed_everything, select_device
from frn.engine import TrainState, evaluate, loader, resume_path, train
from utils.errors import UserError
from frn.log import RunLog
from utils.optim import build_optimizer, build_scheduler
from utils.stats import mean_and_interval
from methods import METHODS
from network import build_backbone


def build_model(args: argparse.Namespace, num_classes: Optional[int] = None):
    """The method `args.method` on the backbone `args.model` (with a whole-class head when
    `num_classes` is given)."""
    method = METHODS[args.method]
    return method(build_backbone(args.model, **method.backbone_options(args, num_classes)), args, num_classes)


def image_list(args, split: str, training: bool) -> ImageList:
    """The images of `split` with the method's pipeline, else the dataset's standard one."""
    return METHODS[args.method].split_images(args, split, training)


def val_episodes(args, dataset: ImageList) -> List[List[int]]:
    """The fixed validation episodes (same every epoch and every run of a seed)."""
    return list(EpisodeSampler(dataset.labels, args.val_n_way, args.n_shot, args.n_query,
                               args.val_n_episode, seed=args.seed, split="val"))


def _run_folder(args, name: str) -> str:
    return os.path.join(args.checkpoint_dir, args.dataset, name)


def _optimizer(args, model, iters_per_epoch: int = 0):
    """Optimiser and LR schedule of the flags; a warm-up or cosine schedule runs per iteration
    (and needs the epoch's length, `iters_per_epoch`)."""
    scheduler = build_scheduler(args.lr, args.gamma, milestones=None if args.step_size else args.milestones,
                                step_size=args.step_size or None, iters_per_epoch=iters_per_epoch,
                                epochs=args.epoch,
                                warmup_iters=args.warmup_iters or args.warmup_epochs * iters_per_epoch,
                                warmup_start=args.warmup_start, cosine=args.lr_schedule == "cosine",
                                eta_min=args.eta_min, lag=args.lr_lag)
    optimizer = build_optimizer(model, scheduler, args.optimizer, args.wd, momentum=args.momentum,
                                nesterov=not args.no_nesterov, groups=model.parameter_groups(args))
    return optimizer, scheduler


def _resume(args, model, optimizer, scheduler) -> TrainState:
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


def _train_stage(args, model, run_dir: str, make_batches, validate, episode=None) -> None:
    """Shared tail of pretrain and meta_train: optimizer, resume, log, epoch loop.

    `make_batches(epoch)` returns (the epoch's batches, their number); the LR schedule takes
    epoch 0's number as every epoch's length (an upper bound for the official FRN epoch). The
    batches depend only on (seed, epoch), so building epoch 0's here changes nothing."""
    _, iters_per_epoch = make_batches(0)
    optimizer, scheduler = _optimizer(args, model, iters_per_epoch)
    state = _resume(args, model, optimizer, scheduler)
    rank, world = rank_and_world()
    net = paddle.DataParallel(model) if world > 1 else model
    log = RunLog(run_dir if rank == 0 else os.path.join(run_dir, f"rank{rank}"), quiet=args.quiet or rank != 0)
    log(f"{'resuming at epoch %d' % state.epoch if state.epoch else 'start'}: {vars(args)}")
    state = train(net, make_batches, optimizer, scheduler, validate, state, args, run_dir, log, episode)
    log(f"done: best val acc {state.best_acc:.2f} at epoch {state.best_epoch}; checkpoints in {run_dir}")


def _validator(args, model):
    """A function returning (val acc, val loss) on the fixed validation episodes."""
    val = image_list(args, "val", training=False)
    episodes = val_episodes(args, val)

    def validate():
        accs, loss = evaluate(model, val, episodes, args.val_n_way, args.n_shot, args.n_query,
                              use_cache=not args.no_feature_cache, num_workers=args.num_workers, desc="val")
        return float(accs.mean()), loss
    return validate


def pretrain(args: argparse.Namespace) -> None:
    """Whole-class training on the method's training plan (base.json by default), validated by
    few-shot episodes on val.json or by the method's own validator (non-episodic methods)."""
    select_device(args.gpu)
    seed_everything(args.seed)
    method = METHODS[args.method]
    plan = method.training_plan(args)
    if args.num_classes and args.num_classes < plan.num_classes:
        raise UserError(f"--num_classes {args.num_classes} is smaller than the {plan.num_classes} training "
                        f"classes; drop the flag or raise it")
    model = build_model(args, args.num_classes or plan.num_classes)
    model.prepare_training(args)
    if args.pretrain_path:
        load_weights(model, args.pretrain_path, "--pretrain_path")
    validate = None if args.val == "none" else model.validator(args)
    if validate is None and args.val == "meta":
        validate = _validator(args, model)

    def make_batches(epoch):
        batches = plan.batches(epoch)
        return loader(plan.dataset, batches, args.num_workers), len(batches)

    suffix = "_pretrain" if method.episodic else ""
    run_dir = _run_folder(args, f"{args.model}_{method.run_name(args)}{suffix}")
    _train_stage(args, model, run_dir, make_batches, validate)


def meta_train(args: argparse.Namespace) -> None:
    """Episodic training on base.json (optionally from pretrained weights)."""
    if not METHODS[args.method].trains_episodically:
        raise UserError(f"--method {args.method} has no episodic training stage; train it with pretrain.py")
    select_device(args.gpu)
    seed_everything(args.seed)
    base = image_list(args, "base", training=True)
    model = build_model(args)
    if args.pretrain_path:
        load_weights(model, args.pretrain_path, "--pretrain_path", pretrained=True)
    validate = _validator(args, model)
    shape = (args.train_n_way, args.n_shot, args.n_query)
    rank, world = paddle.distributed.get_rank(), paddle.distributed.get_world_size()
    if args.train_n_episode:
        check_episode_fits(indices_by_class(base.labels), *shape, "base")  # before anything is written

        def regular_batches(epoch):
            sampler = EpisodeSampler(base.labels, *shape, args.train_n_episode, seed=epoch_seed(args.seed, epoch),
                                     rank=rank, world=world, split="base")
            return loader(base, sampler, args.num_workers), len(sampler)
    else:  # the official FRN epoch: every base image at most once
        pool = PoolEpisodeSampler(base.labels, *shape, seed=args.seed, split="base")

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

    ht = f"_ht{args.ht_meta_batch}" if args.ht_meta_batch else ""
    name = f"{args.model}_{METHODS[args.method].run_name(args)}{ht}_{args.train_n_way}way_{args.n_shot}shot_metatrain"
    _train_stage(args, model, _run_folder(args, name), make_batches, validate, episode=shape)


def test(args: argparse.Namespace) -> List[float]:
    """Few-shot test; prints one `N Test Acc = m% +- ci%` line per task and the mean over tasks."""
    select_device(args.gpu)
    seed_everything(args.seed)
    if not args.model_path:
        raise UserError("--model_path is required: the .pdparams checkpoint to test")
    if not METHODS[args.method].episodic:  # a classifier of whole splits (weak-shot SimTrans)
        return METHODS[args.method].test_whole_split(args)
    dataset = image_list(args, args.split, training=False)
    model = build_model(args)
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
    means = []
    for episodes, way, shot, query in tasks:
        accs, _ = evaluate(model, dataset, episodes, way, shot, query, use_cache=not args.no_feature_cache,
                           num_workers=args.num_workers, desc="test")
        mean, interval = mean_and_interval(accs)
        print(f"{len(accs)} Test Acc = {mean:.2f}% +- {interval:.2f}%", flush=True)
        means.append(mean)
    if len(means) > 1:
        print(f"Mean over {len(means)} tasks: {sum(means) / len(means):.2f}%")
    return means
