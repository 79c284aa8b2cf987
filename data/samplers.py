"""Episode samplers.

Each sampler owns a `numpy.random.RandomState` made from its seed, so episode `i` of a seed is
the same in every run and on every machine, independent of anything else that draws random
numbers. The draws follow the official FRN samplers call for call (`datasets/samplers.py`), so
with the reference's seed they reproduce its episodes exactly (fixture `samplers`).

A batch is the flat index list of one episode: `way*shot` support indices, class-major, then
`way*query` query indices, class-major.
"""
from typing import Dict, Iterator, List, Optional, Sequence, TypeVar

import numpy as np
import paddle

from utils.errors import UserError

T = TypeVar("T")


def rank_share(items: Sequence[T], rank: int = 0, world: int = 1) -> List[T]:
    """The items (batches, episodes) one process of a multi-process run takes.

    Every rank gets the same number, ceil(len / world): like Paddle's `DistributedBatchSampler`
    the list is PADDED by repeating its first items (wrapping around) up to a multiple of
    `world`, then rank r takes items r, r + world, ... Equal counts are what keep the ranks in
    step: a rank with an extra step would wait forever in that step's gradient all-reduce.
    Nothing is dropped, so a single-process run (world 1) and every multi-process run see every
    item; at most world - 1 items are seen twice per epoch."""
    items = list(items)
    if world <= 1 or not items:
        return items
    padded = [items[i % len(items)] for i in range(rank_count(len(items), world) * world)]
    return padded[rank::world]


def rank_count(n_items: int, world: int = 1) -> int:
    """How many of `n_items` each rank takes (`rank_share`): ceil(n_items / world)."""
    return -(-n_items // max(world, 1))


def indices_by_class(labels: Sequence[int]) -> Dict[int, List[int]]:
    """Map each label to the (sorted) dataset indices that carry it."""
    groups: Dict[int, List[int]] = {}
    for index, label in enumerate(labels):
        groups.setdefault(int(label), []).append(index)
    return groups


def check_episode_fits(groups: Dict[int, List[int]], way: int, shot: int, query: int, split: str) -> None:
    """Refuse an impossible way/shot/query for these classes with a one-line error."""
    if way < 1 or shot < 1 or query < 1:
        raise UserError(f"way, shot and query must be >= 1 (got way={way}, shot={shot}, query={query})")
    if way > len(groups):
        raise UserError(f"{way}-way episodes need {way} classes but the {split} split has {len(groups)}; "
                        f"lower the n_way flag")
    smallest = min(len(v) for v in groups.values())
    if shot + query > smallest:
        raise UserError(f"--n_shot {shot} + --n_query {query} = {shot + query} images per class, but a "
                        f"{split} class has only {smallest}; lower --n_shot/--n_query")


class EpisodeSampler(paddle.io.BatchSampler):
    """`n_episodes` random episodes (the reference's `random_sampler`, with any query count).

    For each episode: shuffle the class list, take the first `way` classes; for each, shuffle
    its images and take `shot` support then `query` query images. With `world > 1` rank `rank`
    yields its `rank_share` of the same sequence (episodes rank, rank+world, ..., padded).
    """

    def __init__(self, labels: Sequence[int], way: int, shot: int, query: int, n_episodes: int,
                 seed: int = 0, rank: int = 0, world: int = 1, split: str = "test"):
        self.groups = indices_by_class(labels)
        check_episode_fits(self.groups, way, shot, query, split)
        self.way, self.shot, self.query = way, shot, query
        self.n_episodes, self.seed, self.rank, self.world = n_episodes, seed, rank, world

    def episodes(self) -> Iterator[List[int]]:
        """All `n_episodes` episodes of the seed, for every rank."""
        rng = np.random.RandomState(self.seed)
        # Like the reference, the class list and each class's image list are shuffled in
        # place, so every shuffle starts from the previous episode's order.
        classes = list(self.groups)
        pools = {c: list(v) for c, v in self.groups.items()}
        for _ in range(self.n_episodes):
            rng.shuffle(classes)
            support, query = [], []
            for c in classes[:self.way]:
                rng.shuffle(pools[c])
                support += pools[c][:self.shot]
                query += pools[c][self.shot:self.shot + self.query]
            yield support + query

    def __iter__(self) -> Iterator[List[int]]:
        yield from rank_share(list(self.episodes()), self.rank, self.world)

    def __len__(self) -> int:
        return rank_count(self.n_episodes, self.world)


class PoolEpisodeSampler(paddle.io.BatchSampler):
    """One epoch of the official FRN training sampler (`meta_batchsampler`).

    Every image is used at most once per epoch: classes are drawn without replacement with
    probability proportional to their unused images, and the epoch ends when fewer than `way`
    classes still have `shot + query` unused images. Call `set_epoch` before each epoch; the
    epoch's episodes depend only on (seed, epoch), which is what makes resuming exact. With
    `world > 1` every rank draws the same epoch and takes its `rank_share` of it (padded), so
    the ranks train on different episodes and take the same number of steps.
    """

    def __init__(self, labels: Sequence[int], way: int, shot: int, query: int, seed: int = 0,
                 split: str = "base", rng: Optional[np.random.RandomState] = None, rank: int = 0, world: int = 1):
        self.groups = indices_by_class(labels)
        check_episode_fits(self.groups, way, shot, query, split)
        self.way, self.shots, self.seed = way, (shot, query), seed
        self.rng = rng
        self.rank, self.world = rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[List[int]]:
        if self.world <= 1:
            yield from self.episodes()
        else:  # the epoch's length is known only once it is drawn: draw it whole, then share it
            yield from rank_share(list(self.episodes()), self.rank, self.world)

    def episodes(self) -> Iterator[List[int]]:
        """The whole epoch's episodes (every rank's)."""
        rng = self.rng if self.rng is not None else np.random.RandomState([self.seed, self.epoch])
        pools = {c: list(v) for c, v in self.groups.items()}
        for c in pools:  # the reference shuffles every class's list in class order
            rng.shuffle(pools[c])
        needed = sum(self.shots)
        while len(pools) >= self.way:
            classes = list(pools)
            sizes = np.array([len(pools[c]) for c in classes], dtype=np.float64)
            picked = rng.choice(len(classes), self.way, replace=False, p=sizes / sizes.sum())
            episode = []
            for n in self.shots:
                for i in picked:
                    for _ in range(n):
                        episode.append(pools[classes[i]].pop())
            for i in picked:
                if len(pools[classes[i]]) < needed:
                    del pools[classes[i]]
            yield episode

    def __len__(self) -> int:
        # Upper bound: the exact count depends on the draws (every image used at most once).
        return rank_count(sum(len(v) for v in self.groups.values()) // (self.way * sum(self.shots)), self.world)


class ShuffledBatchSampler(paddle.io.BatchSampler):
    """Shuffled mini-batches for whole-class training; the order depends only on (seed, epoch)
    (call `set_epoch`), and with `world > 1` each rank takes its `rank_share` (every world-th
    batch, padded to equal counts)."""

    def __init__(self, n_items: int, batch_size: int, seed: int = 0, drop_last: bool = True,
                 rank: int = 0, world: int = 1):
        self.n_items, self.batch_size, self.seed, self.drop_last = n_items, batch_size, seed, drop_last
        self.rank, self.world, self.epoch = rank, world, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> List[List[int]]:
        order = np.random.RandomState([self.seed, self.epoch]).permutation(self.n_items).tolist()
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        return [order[i:i + self.batch_size] for i in range(0, stop, self.batch_size)]

    def __iter__(self) -> Iterator[List[int]]:
        yield from rank_share(self._batches(), self.rank, self.world)

    def __len__(self) -> int:
        return rank_count(len(self._batches()), self.world)
