"""The hard-task (HT) meta-batch of Meta-Transfer Learning (Sun et al., CVPR 2019, §4.2 and
Algorithm 1). Ours: neither official code (PyTorch nor TensorFlow) implements it.

The paper: tasks come in meta-batches; after each task is trained on, its failure class - the
class with the lowest query accuracy, chosen by ranking rather than a threshold - joins the set
{m}; after the meta-batch, "harder" tasks are sampled from {m} and trained on like any task;
then {m} is emptied. Of the paper's two ways to build a hard task we take the one it reports
as better: new images of the failure classes (not the images of the failed tasks).

Where the paper leaves a choice open, we decide (and say so in the README):
- ties in accuracy (frequent in 1-shot) are broken by the class's mean query cross-entropy;
- a hard task takes `way` distinct classes of {m} at random; when {m} has fewer than `way`
  distinct classes, the task is completed with other base classes drawn at random;
- only regular tasks report failure classes; every task, regular or hard, is one optimiser step.

`HardTaskEpisodes` wraps the regular episode batches of one epoch. The training loop calls
`observe(logits)` after each step; because the hard tasks are read here, in the main thread,
after the feedback has arrived, the regular batches can still be prefetched by DataLoader
workers.
"""
from typing import Iterable, Iterator, List, Sequence, Tuple

import numpy as np
import paddle
import paddle.nn.functional as F

from data.samplers import indices_by_class
from frn.engine import MainThreadLoader
from methods.base import query_labels


def worst_class(logits: paddle.Tensor, way: int, n_query: int) -> int:
    """Position of the class with the lowest query accuracy in a class-major episode (ties:
    the highest mean query cross-entropy)."""
    labels = query_labels(way, n_query)
    correct = (logits.argmax(axis=1) == labels).astype("float32").reshape([way, n_query]).mean(1).numpy()
    loss = F.cross_entropy(logits, labels, reduction="none").reshape([way, n_query]).mean(1).numpy()
    return int(np.lexsort((-loss, correct))[0])


class HardTaskEpisodes:
    """Regular episode batches, each meta-batch of `meta_batch` tasks followed by `hard_tasks`
    tasks re-sampled from its failure classes. Yields (images, dataset labels) like a loader."""

    def __init__(self, batches: Iterable, n_batches: int, dataset, way: int, shot: int, query: int,
                 meta_batch: int, hard_tasks: int, seed: Sequence[int]):
        self.batches, self.n_batches, self.dataset = batches, n_batches, dataset
        self.way, self.shot, self.query = way, shot, query
        self.meta_batch, self.hard_tasks = meta_batch, hard_tasks
        self.rng = np.random.RandomState(list(seed))
        self.groups = indices_by_class(dataset.labels)
        self.failures: List[int] = []      # {m}: dataset classes, in the order they failed
        self.hard_episodes: List[List[int]] = []   # the hard tasks drawn so far (for inspection)
        self._classes: List[int] = []      # dataset classes of the task being trained on
        self.regular = False                # whether the task being trained on is a regular one

    def __len__(self) -> int:
        return self.n_batches + (self.n_batches // self.meta_batch) * self.hard_tasks

    def __iter__(self) -> Iterator[Tuple[paddle.Tensor, paddle.Tensor]]:
        for i, (images, labels) in enumerate(self.batches):
            self._start(labels, regular=True)
            yield images, labels
            if (i + 1) % self.meta_batch == 0:
                for _ in range(self.hard_tasks):
                    episode = self.hard_episode()
                    images, labels = self.read(episode)
                    self._start(labels, regular=False)
                    yield images, labels
                self.failures = []

    def _start(self, labels: paddle.Tensor, regular: bool) -> None:
        self._classes = [int(c) for c in labels.numpy()[:self.way * self.shot:self.shot]]
        self.regular = regular

    def observe(self, logits: paddle.Tensor) -> None:
        """The query logits of the task just trained on: a regular task adds its failure class."""
        if self.regular:
            self.failures.append(self._classes[worst_class(logits, self.way, self.query)])

    def hard_episode(self) -> List[int]:
        """Dataset indices of one hard task (support class-major, then queries): `way` classes
        of the failure set (completed at random if it is smaller), fresh images of each."""
        failed = list(dict.fromkeys(self.failures))   # distinct, in order
        if len(failed) >= self.way:
            classes = [failed[i] for i in self.rng.choice(len(failed), self.way, replace=False)]
        else:
            others = [c for c in self.groups if c not in failed]
            extra = self.rng.choice(len(others), self.way - len(failed), replace=False)
            classes = failed + [others[i] for i in extra]
            classes = [classes[i] for i in self.rng.permutation(self.way)]
        picks = [self.rng.choice(self.groups[c], self.shot + self.query, replace=False).tolist() for c in classes]
        episode = [i for p in picks for i in p[:self.shot]] + [i for p in picks for i in p[self.shot:]]
        self.hard_episodes.append(episode)
        return episode

    def read(self, episode: List[int]) -> Tuple[paddle.Tensor, paddle.Tensor]:
        return next(iter(MainThreadLoader(self.dataset, [episode])))
