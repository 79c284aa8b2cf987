"""The training loop and the evaluation loop, written once for every method.

Both talk to a method only through `FewShotMethod` (methods/base.py): `model(images, labels)`
for whole-class batches and `model(images, labels, episode=(way, shot))` for episodes — going
through `forward` keeps `paddle.DataParallel` usable — and `extract`/`episode_logits` for
evaluation.
"""
import os
import time
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle.io.dataloader.collate import default_collate_fn
from tqdm import tqdm

from frn.checkpoint import atomic_save, save_model
from frn.feature_store import DEFAULT_RAM_GB, HostFeatures
from utils.device import epoch_seed, rank_seed, seed_everything
from methods.base import query_labels

Episode = List[int]  # dataset indices: support class-major, then queries class-major


def progress(iterable: Iterable, desc: str, total: Optional[int] = None) -> tqdm:
    """A tqdm bar that stays quiet in CI (TQDM_DISABLE=1) and refreshes at most twice a second."""
    return tqdm(iterable, desc=desc, total=total, mininterval=0.5, leave=False, dynamic_ncols=True)


# ----------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------
class MainThreadLoader:
    """Batches read in the calling thread. Paddle's single-process DataLoader reads in a helper
    thread that dies silently when the dataset raises (a corrupt image), leaving the main thread
    waiting forever; reading here lets the one-line error surface."""

    def __init__(self, dataset, batch_sampler):
        self.dataset, self.batch_sampler = dataset, batch_sampler

    def __iter__(self):
        for indices in self.batch_sampler:
            batch = default_collate_fn([self.dataset[i] for i in indices])
            yield [f if isinstance(f, paddle.Tensor) else paddle.to_tensor(f) for f in batch]

    def __len__(self) -> int:
        return len(self.batch_sampler)


#: /dev/shm space asked for per batch a worker may hold (Paddle prefetches 2 per worker): 256 MB
#: is 7x a 20-way 5-shot 15-query episode at 84 px (34 MB), 3x 128 images at 224 px (77 MB)
SHARED_MEMORY_PER_BATCH = 256 << 20
PREFETCH_PER_WORKER = 2
_shared_memory = {"allowed": True}


def allow_shared_memory(allowed: bool) -> None:
    """Let worker processes hand batches over in shared memory (the default), or not
    (--no_shared_memory: they are pickled through a pipe instead)."""
    _shared_memory["allowed"] = bool(allowed)


def shared_memory_fits(num_workers: int, folder: str = "/dev/shm") -> bool:
    """Whether `folder` has room for the batches `num_workers` workers keep in flight. A full
    /dev/shm kills a worker with a bus error (a container's default is 64 MB), so too little
    room means no shared memory rather than a crash."""
    try:
        stat = os.statvfs(folder)
    except (OSError, AttributeError):  # no /dev/shm (macOS, Windows): Paddle's default transport
        return False
    return stat.f_bavail * stat.f_frsize >= num_workers * PREFETCH_PER_WORKER * SHARED_MEMORY_PER_BATCH


def loader(dataset, batch_sampler, num_workers: int):
    """A DataLoader over `batch_sampler` (lists of indices); worker processes if num_workers > 0,
    handing batches over in shared memory when allowed and /dev/shm has room.

    Built anew for every epoch on purpose: Paddle seeds its workers' random streams once per
    DataLoader iterator (from NumPy's state, which `seed_everything(epoch_seed(...))` sets), so
    fresh workers per epoch are what keeps each epoch's augmentation a function of (seed, epoch)
    and a resumed run exact; persistent workers would carry the first epoch's streams on. Their
    start is a fork per worker (docs/performance.md: well under a second per epoch)."""
    if num_workers == 0:
        return MainThreadLoader(dataset, batch_sampler)
    shared = _shared_memory["allowed"] and shared_memory_fits(num_workers)
    return paddle.io.DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers,
                                use_shared_memory=shared)


@paddle.no_grad()
def feature_batches(model, dataset, indices: Sequence[int], batch_size: int = 64,
                    num_workers: int = 0) -> Iterator[paddle.Tensor]:
    """Features of `dataset[indices]`, one backbone pass per image, `batch_size` images at a
    time in `indices` order."""
    batches = [list(indices[i:i + batch_size]) for i in range(0, len(indices), batch_size)]
    for images, _ in progress(loader(dataset, batches, num_workers), "features", total=len(batches)):
        yield model.extract(images)


def extract_features(model, dataset, indices: Sequence[int], batch_size: int = 64,
                     num_workers: int = 0) -> paddle.Tensor:
    """Features of `dataset[indices]`, one backbone pass per image, stacked in `indices` order
    on the device (for a split's worth of episodes use `FeatureCache`, which keeps them on the host)."""
    return paddle.concat(list(feature_batches(model, dataset, indices, batch_size, num_workers)))


@paddle.no_grad()
def classify_split(model, dataset, batch_size: int = 64, num_workers: int = 0,
                   desc: str = "eval") -> Tuple[float, float, np.ndarray]:
    """Whole-split classification (non-episodic methods): (top-1 accuracy %, mean cross-entropy,
    per-image correctness 0/1) of `model.classify(images)` over every image of `dataset`."""
    model.eval()
    batches = [list(range(i, min(i + batch_size, len(dataset)))) for i in range(0, len(dataset), batch_size)]
    correct, loss_sum = [], 0.0
    bar = progress(loader(dataset, batches, num_workers), desc, total=len(batches))
    for images, labels, *_ in bar:
        logits = model.classify(images)
        correct.append((logits.argmax(axis=1) == labels.reshape([-1])).numpy())
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        bar.set_postfix(acc=f"{100 * np.concatenate(correct).mean():.2f}", refresh=False)
    correct = np.concatenate(correct).astype(np.float64)
    return 100.0 * float(correct.mean()), loss_sum / len(correct), correct


def correct_fraction(logits: paddle.Tensor, labels: paddle.Tensor) -> paddle.Tensor:
    """Fraction of rows whose argmax is the label: a float32 scalar, left on the device."""
    return (logits.argmax(axis=1) == labels.reshape([-1])).astype("float32").mean()


def accuracy(logits: paddle.Tensor, labels: paddle.Tensor) -> float:
    """Percentage of rows whose argmax is the label."""
    return float(correct_fraction(logits, labels)) * 100


def episode_accuracy(logits: paddle.Tensor, way: int, query: int) -> Tuple[float, float]:
    """(accuracy in %, cross-entropy) of class-major queries with positional labels."""
    labels = query_labels(way, query)
    return accuracy(logits, labels), float(F.cross_entropy(logits, labels))


def host_rows(features: paddle.Tensor) -> np.ndarray:
    """A batch of features as a host array of the same values (bfloat16, which NumPy lacks,
    widened to float32: exact)."""
    if features.dtype == paddle.bfloat16:
        features = features.astype("float32")
    return features.numpy()


class FeatureCache:
    """Backbone features of every image some episode uses, each extracted once, kept on the host
    and handed to the device one group of episodes at a time.

    The features live in a `HostFeatures` store (frn/feature_store.py): in RAM up to `ram_gb`
    gigabytes, else in a temporary file read back row by row. The device (and, with the file,
    the process) holds at most one extraction batch (`batch_size` images) and one group of
    episodes (`group` x images per episode) of features, whatever the size of the split or the
    number of episodes; the host index costs 8 bytes per distinct image. The features are the
    backbone's own values in its dtype, so every path gives the same scores."""

    def __init__(self, model, dataset, episodes: Sequence[Episode], num_workers: int = 0,
                 ram_gb: float = DEFAULT_RAM_GB, folder: Optional[str] = None, batch_size: int = 64):
        self.needed = np.unique(np.fromiter((i for episode in episodes for i in episode), dtype=np.int64))
        self.store = HostFeatures(len(self.needed), int(ram_gb * 2 ** 30), folder)
        for features in feature_batches(model, dataset, self.needed.tolist(), batch_size, num_workers):
            self.store.append(host_rows(features))
        self.store.finish()

    def __len__(self) -> int:
        """The number of distinct images cached."""
        return len(self.needed)

    def episodes(self, episodes: Sequence[Episode]) -> paddle.Tensor:
        """Features [len(episodes), images of an episode, ...] of equally sized episodes, on the device."""
        indices = np.asarray(episodes, dtype=np.int64)
        rows = np.searchsorted(self.needed, indices.reshape(-1))
        return paddle.to_tensor(self.store.gather(rows).reshape(*indices.shape, *self.store.row_shape))

    def batches(self, episodes: Sequence[Episode], group: int) -> Iterator[paddle.Tensor]:
        """The episodes' features, `group` episodes at a time."""
        for start in range(0, len(episodes), group):
            yield self.episodes(episodes[start:start + group])

    def close(self) -> None:
        """Free the host store."""
        self.store.close()

    def __enter__(self) -> "FeatureCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


#: receives the test-time scores [episodes, queries, way] of each batch of episodes, in order
ScoresHook = Callable[[np.ndarray], None]


@paddle.no_grad()
def score_episodes(model, batches: Iterable[paddle.Tensor], n_batches: int, way: int, shot: int, query: int,
                   desc: str = "eval", on_scores: Optional[ScoresHook] = None) -> Tuple[np.ndarray, float]:
    """Per-episode accuracies (%) and mean cross-entropy of `model.episode_scores_batch` on
    feature batches [episodes, support then query images, ...]."""
    n_support = way * shot
    accs, losses = [], []
    bar = progress(batches, desc, total=n_batches)
    for feats in bar:
        scores = model.episode_scores_batch(feats[:, :n_support], feats[:, n_support:], way, shot)
        if on_scores is not None:
            on_scores(scores.numpy())
        for e in range(scores.shape[0]):
            acc, loss = episode_accuracy(scores[e], way, query)
            accs.append(acc)
            losses.append(loss)
        bar.set_postfix(acc=f"{np.mean(accs):.2f}", refresh=False)
    return np.asarray(accs), float(np.mean(losses))


@paddle.no_grad()
def evaluate(model, dataset, episodes: Sequence[Episode], way: int, shot: int, query: int,
             use_cache: bool = True, num_workers: int = 0, desc: str = "eval",
             on_scores: Optional[ScoresHook] = None, cache_ram_gb: float = DEFAULT_RAM_GB) -> Tuple[np.ndarray, float]:
    """Per-episode accuracies (%) and the mean cross-entropy of the test-time scores.

    With `use_cache` (and a method whose features are frozen at test time) every distinct image
    is passed through the backbone once and all episodes read from that cache (`FeatureCache`:
    on the host, in RAM up to `cache_ram_gb`, else in a temporary file), in groups of
    `model.eval_episode_batch` episodes handed to `episode_scores_batch` together; otherwise
    each episode is a batch of its own. All paths give the same numbers on the same episodes.
    `on_scores` sees the scores of every batch of episodes (test.py --save_predictions).
    """
    model.eval()
    if use_cache and model.features_are_frozen_at_test:
        group = max(1, int(model.eval_episode_batch))
        with FeatureCache(model, dataset, episodes, num_workers, ram_gb=cache_ram_gb) as cache:
            return score_episodes(model, cache.batches(episodes, group), -(-len(episodes) // group),
                                  way, shot, query, desc, on_scores)
    batches = (model.extract(images).unsqueeze(0) for images, _ in loader(dataset, list(episodes), num_workers))
    return score_episodes(model, batches, len(episodes), way, shot, query, desc, on_scores)


# ----------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------
class TrainState:
    """Everything a run needs to continue exactly where it stopped."""

    def __init__(self, epoch: int = 0, best_acc: float = -1.0, best_epoch: int = -1,
                 history: Optional[List[Dict]] = None):
        self.epoch, self.best_acc, self.best_epoch = epoch, best_acc, best_epoch
        self.history = history or []


def resume_path(run_dir: str) -> str:
    return os.path.join(run_dir, "resume.pdstate")


def save_resume(run_dir: str, model, optimizer, scheduler, state: TrainState, seed: int) -> None:
    """Atomically write model, optimizer, schedule, epoch and the seed that derives every
    later epoch's random streams (sampler, augmentation, Paddle RNG)."""
    atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "epoch": state.epoch, "best_acc": state.best_acc,
                 "best_epoch": state.best_epoch, "history": state.history, "seed": seed,
                 "identity": model.checkpoint_identity()}, resume_path(run_dir))


def zero_nan_gradients(parameters: Iterable[paddle.Tensor]) -> None:
    """Zero every gradient that holds a NaN (DeepEMD's `detect_grad_nan`: a degenerate transport
    problem must not poison the weights). One host synchronisation when no gradient has a NaN."""
    with_grad = [p for p in parameters if p.grad is not None]
    if not with_grad:
        return
    has_nan = paddle.stack([paddle.isnan(p.grad).any() for p in with_grad])
    if not bool(has_nan.any()):
        return
    for param, bad in zip(with_grad, has_nan.numpy()):
        if bad:
            param.clear_gradient(set_to_zero=True)


def per_iteration(scheduler) -> bool:
    """Whether `scheduler` is stepped after every optimiser step (else once per epoch)."""
    return bool(getattr(scheduler, "per_iteration", False))


#: one training step's forward: (model, batch) -> (loss, logits, labels the logits are scored against)
Step = Callable[[paddle.nn.Layer, list], Tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]]


def whole_class_step(model, batch: list) -> Tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]:
    """Whole-class training: the method's loss over all base classes of a labelled batch."""
    images, labels = batch[0], batch[1]
    loss, logits = model(images, labels)
    return loss, logits, labels


def episode_step(way: int, shot: int, query: int) -> Step:
    """Episodic training: the batch is one episode (support class-major, then queries)."""
    labels = query_labels(way, query)

    def step(model, batch: list) -> Tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]:
        loss, logits = model(batch[0], labels, episode=(way, shot))
        return loss, logits, labels
    return step


def unwrap(model) -> paddle.nn.Layer:
    """The method inside a `paddle.DataParallel` (or the model itself)."""
    return model._layers if isinstance(model, paddle.DataParallel) else model


#: scalars for a dashboard (VisualDL, frn/log.py `ScalarLog`): ({tag: value}, step) -> None
Scalars = Callable[[Dict[str, float], int], None]


def train_one_epoch(model, batches: Iterable, n_batches: int, optimizer, epoch: int, step: Step,
                    log: Callable[[str], None], print_freq: int = 100, scheduler=None,
                    scalars: Optional[Scalars] = None) -> Tuple[float, float]:
    """One pass over `batches`, one optimiser step per batch with the loss of `step`; returns
    (mean loss, mean accuracy %). A per-iteration `scheduler` is stepped after every step.
    Every `print_freq`-th step is logged, and given to `scalars` (the batch's loss and accuracy
    and the learning rate it was trained with, at step `epoch * n_batches + step`).

    The loss and accuracy sums stay on the device and are read only at the logged steps and at
    the end, so a step does not wait for the device (one read per `print_freq` steps).

    Batches that depend on training results (the HT meta-batch, frn/hard_tasks.py) have an
    `observe(logits)` method: it receives the detached logits after every step.
    """
    model.train()
    observe = getattr(batches, "observe", None)
    zero_nans = getattr(unwrap(model), "zero_nan_gradients", False)
    sums = None  # [loss sum, accuracy sum] on the device
    steps = 0
    bar = progress(batches, f"epoch {epoch}", total=n_batches)
    for batch in bar:
        loss, logits, labels = step(model, batch)
        optimizer.clear_grad()
        loss.backward()
        if zero_nans:
            zero_nan_gradients(model.parameters())
        lr = optimizer.get_lr()  # the rate of this step (a per-iteration schedule moves on below)
        optimizer.step()
        if per_iteration(scheduler):
            scheduler.step()
        if observe is not None:
            observe(logits.detach())
        with paddle.no_grad():  # float64: the same sums as Python floats of the float32 values
            batch_stats = paddle.stack([loss.detach().reshape([]).astype("float64"),
                                        correct_fraction(logits.detach(), labels).astype("float64") * 100])
            sums = batch_stats if sums is None else sums + batch_stats
        if steps % print_freq == 0:
            batch_loss, batch_acc = (float(v) for v in batch_stats.numpy())
            log(f"Epoch {epoch} | Batch {steps}/{n_batches} | Loss {batch_loss:.6f}")
            if scalars is not None:
                scalars({"train/loss": batch_loss, "train/acc": batch_acc, "train/lr": lr},
                        epoch * n_batches + steps)
            mean_loss, mean_acc = (float(v) / (steps + 1) for v in sums.numpy())
            bar.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{mean_acc:.1f}", refresh=False)
        steps += 1
    if sums is None:
        return 0.0, 0.0
    loss_sum, acc_sum = (float(v) for v in sums.numpy())
    return loss_sum / steps, acc_sum / steps


def validation_epoch(epoch: int, every: int, epochs: int) -> bool:
    """Whether to validate after 0-based `epoch`: after every `every`-th epoch counted from 1, as
    the official FRN trainer and mmfewshot's evaluation hook do ((epoch + 1) % every == 0), and
    after the last one."""
    return (epoch + 1) % every == 0 or epoch == epochs - 1


def same_buffers_on_every_rank(model) -> None:
    """Give every rank rank 0's state outside the gradients — buffers and the parameters that
    do not train, among them Paddle's BatchNorm running statistics — as PyTorch's DDP does for
    buffers: the all-reduce keeps the trained parameters equal, but each rank updates its
    running statistics from its own batches. A no-op outside a multi-process DataParallel."""
    if not isinstance(model, paddle.DataParallel) or paddle.distributed.get_world_size() < 2:
        return
    inner = unwrap(model)
    for tensor in [p for p in inner.parameters() if p.stop_gradient] + list(inner.buffers()):
        paddle.distributed.broadcast(tensor, src=0)


def validation_fell(history: List[Dict], stop_th: int) -> bool:
    """The reference SimTrans's early stop: the last `stop_th` validation scores each lower than
    the one before (off when `stop_th` <= 1)."""
    scores = [h["val_acc"] for h in history if h.get("val_acc") is not None][-stop_th:]
    if stop_th <= 1 or len(scores) < stop_th:
        return False
    return all(a > b for a, b in zip(scores, scores[1:]))


def train(model, make_batches: Callable[[int], Tuple[Iterable, int]], optimizer, scheduler,
          validate: Optional[Callable[[], tuple]], state: TrainState, args, run_dir: str,
          log, step: Step = whole_class_step, before_epoch: Optional[Callable[[int], None]] = None,
          scalars: Optional[Scalars] = None) -> TrainState:
    """Epoch loop: train with `step`, step the LR schedule, validate, keep best/last/periodic
    checkpoints.

    `before_epoch(epoch)` runs before each epoch (a workflow's hook: the weak-shot steps reset
    the optimizer and alternate losses there); with `args.stop_th` > 1 training stops once that many validation
    scores in a row fell. `validate` returns (score, loss) and optionally a dict of more metrics
    (logged and kept in history.json). Every epoch's randomness is derived from (seed, epoch),
    and a resumable state is written atomically after each epoch, so a killed run resumed with
    --resume ends with the weights an uninterrupted run would have. `model` may be a
    `paddle.DataParallel`: each rank seeds its epoch with `rank_seed` (rank 0 as a single
    process), every rank ends each epoch with rank 0's buffers, and only rank 0 writes;
    `validate` must return the same on every rank (frn/runs.py validates once and shares it),
    since the early-stop decision is taken on every rank from it. `scalars` receives the logged steps' loss,
    accuracy and learning rate, and each epoch's means and validation (step: the epoch).
    """
    inner = unwrap(model)
    rank = paddle.distributed.get_rank()
    writes = rank == 0
    stop_th = getattr(args, "stop_th", 0)
    for epoch in range(state.epoch, args.epoch):
        if validation_fell(state.history, stop_th):  # checked first, so a resumed run stops too
            log(f"early stop: the last {stop_th} validation scores fell one after the other")
            break
        start = time.time()
        seed_everything(rank_seed(epoch_seed(args.seed, epoch), rank))
        if before_epoch is not None:
            before_epoch(epoch)
        batches, n_batches = make_batches(epoch)
        train_loss, train_acc = train_one_epoch(model, batches, n_batches, optimizer, epoch, step, log,
                                                scheduler=scheduler, scalars=scalars)
        same_buffers_on_every_rank(model)
        epoch_lr = optimizer.get_lr()  # the rate this epoch ran at (the step below sets the next one's)
        if not per_iteration(scheduler):
            scheduler.step()
        val_loss = val_acc = None
        extra_metrics = {}
        if validate is not None and validation_epoch(epoch, args.val_freq, args.epoch):
            val_acc, val_loss, *more = validate()
            extra_metrics = more[0] if more else {}
            log(f"val loss is {val_loss:.2f}, val acc is {val_acc:.2f}"
                + "".join(f", {name} is {value:.2f}" for name, value in extra_metrics.items()))
            if val_acc > state.best_acc:
                state.best_acc, state.best_epoch = val_acc, epoch
                log("best model! save...")
                if writes:
                    save_model(inner, os.path.join(run_dir, "best_model.pdparams"), epoch)
            log(f"model best acc is {state.best_acc:.2f}, best acc epoch is {state.best_epoch}")
        elif validate is None and writes:  # no validation: the latest model is the one to keep
            save_model(inner, os.path.join(run_dir, "best_model.pdparams"), epoch)
        log(f"This epoch use {(time.time() - start) / 60:.2f} minutes")
        log(f"train loss is {train_loss:.2f}, train acc is {train_acc:.2f}")
        state.epoch = epoch + 1
        state.history.append({"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                              "val_loss": val_loss, "val_acc": val_acc, **extra_metrics,
                              "lr": epoch_lr, "minutes": (time.time() - start) / 60})
        if scalars is not None:
            validated = {} if val_acc is None else {"val/acc": val_acc, "val/loss": val_loss,
                                                     **{f"val/{k}": v for k, v in extra_metrics.items()}}
            scalars({"epoch/train_loss": train_loss, "epoch/train_acc": train_acc, "epoch/lr": epoch_lr,
                     **validated}, epoch)
        if writes:
            save_model(inner, os.path.join(run_dir, "last_model.pdparams"), epoch)
            if (epoch + 1) % args.save_freq == 0:
                save_model(inner, os.path.join(run_dir, f"{epoch + 1}.pdparams"), epoch)
            log.record(state.history)
            save_resume(run_dir, inner, optimizer, scheduler, state, args.seed)
    return state
