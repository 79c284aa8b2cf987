"""Weak-shot training data (SimTrans): web images with per-image weights, and the reference's
batch builders — pair batches of base and web images for the SimNet, balanced evaluation
batches, and plain shuffled epochs. Every builder is a function of (seed, epoch).
"""
from typing import List, Sequence

import numpy as np
import paddle

from data.datasets import ImageList
from data.samplers import Labels, ShuffledBatchSampler, indices_by_class

F1_CLASSES, F1_IMAGES = 10, 10   # SimNet evaluation batches: 10 classes x 10 images


class JoinedImages(paddle.io.Dataset):
    """Several filelists as one labelled set, each part's labels shifted past the classes of the
    parts before it (the reference's cat_datasets: base classes first, then novel)."""

    def __init__(self, parts: Sequence[ImageList]):
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(part) for part in self.parts])
        shifts = np.cumsum([0] + [part.num_classes for part in self.parts])
        self.labels = np.concatenate([part.labels + shift for part, shift in zip(self.parts, shifts)])
        self.label_names = [name for part in self.parts for name in part.label_names]
        self.file_names = [name for part in self.parts for name in part.file_names]
        self.first_part_classes = self.parts[0].num_classes

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int):
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        image, _ = self.parts[part][index - int(self.offsets[part])]
        return image, self.labels[index]


class WeightedImages(paddle.io.Dataset):
    """(image, label, sample weight) of a web filelist."""

    def __init__(self, images: ImageList, weights: np.ndarray):
        self.images, self.weights = images, np.asarray(weights, dtype=np.float32)
        self.labels, self.label_names = images.labels, images.label_names

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image, label = self.images[index]
        return image, label, self.weights[index]


def rand_pair_batches(labels: Labels, batch_size: int, class_num: int,
                      rng: np.random.RandomState) -> List[List[int]]:
    """The reference's RandPairSet: len // batch_size batches, each drawn from at most `class_num`
    random classes that still have unused images: pick one of them, then one of its unused images,
    until the batch is full or the chosen classes are exhausted (each image once per epoch)."""
    pools = indices_by_class(labels)  # fresh lists, emptied by the draws below
    batches = []
    for _ in range(len(labels) // batch_size):
        remained = [c for c, pool in pools.items() if pool]
        if not remained:
            break
        chosen = rng.permutation(remained).tolist()[:class_num]
        batch: List[int] = []
        while chosen and len(batch) < batch_size:
            pick = rng.randint(0, len(chosen))
            pool = pools[chosen[pick]]
            batch.append(pool.pop(rng.randint(len(pool))))
            if not pool:
                chosen.pop(pick)
        batches.append(batch)
    return batches


def diff_pair_batches(labels: Labels, batch_size: int, n_batches: int,
                      rng: np.random.RandomState) -> List[List[int]]:
    """The reference's DiffPairSet (its --noisy_frac batches): `n_batches` batches, each one random
    image of each of min(batch_size, classes) distinct random classes, so every pair of a batch but
    the self-pairs is dissimilar."""
    groups = indices_by_class(labels)
    classes = sorted(groups)
    batches = []
    for _ in range(n_batches):
        chosen = rng.choice(len(classes), min(batch_size, len(classes)), replace=False)
        batches.append([int(rng.choice(groups[classes[c]], 1)[0]) for c in chosen])
    return batches


def pair_training_batches(labels_a: Labels, labels_b: Labels, offset_b: int, batch_size: int,
                          class_num_a: int, class_num_b: int, seed: int, epoch: int,
                          noisy_frac: float = 0.0) -> List[List[int]]:
    """One SimNet epoch (the reference's get_train_loader_ for A, then for B): RandPairSet batches of
    the A images fused with int(noisy_frac x their number) DiffPairSet batches of the B (web) images,
    the same for the B images; each list shuffled, zipped to the shorter one, a pair of batches of
    different lengths skipped. Each batch is its A-side indices then its B-side indices, as indices
    of the concatenated dataset [A images, B images] (B shifted by `offset_b`). With noisy_frac 0 no
    random number is drawn for the noise: the batches are those of the plain method."""
    rng = np.random.RandomState([seed, epoch])
    a = rand_pair_batches(labels_a, batch_size, class_num_a, rng)
    a += [[offset_b + i for i in batch]
          for batch in diff_pair_batches(labels_b, batch_size, int(len(a) * noisy_frac), rng)]
    b = rand_pair_batches(labels_b, batch_size, class_num_b, rng)
    b += diff_pair_batches(labels_b, batch_size, int(len(b) * noisy_frac), rng)
    a = [a[i] for i in rng.permutation(len(a))]
    b = [b[i] for i in rng.permutation(len(b))]
    return [x + [offset_b + i for i in y] for x, y in zip(a, b) if len(x) == len(y)]


def f1_batches(labels: Labels, seed: int, n_batches: int) -> List[List[int]]:
    """The reference's SimNet evaluation batches (SequentialBalancedSampler2), drawn once: each of
    min(10, classes) random classes x 10 random images (with replacement if a class has fewer)."""
    rng = np.random.RandomState(seed)
    groups = indices_by_class(labels)
    classes = sorted(groups)
    batches = []
    for _ in range(n_batches):
        batch = []
        for c in rng.choice(len(classes), min(F1_CLASSES, len(classes)), replace=False):
            pool = groups[classes[c]]
            batch += rng.choice(pool, F1_IMAGES, replace=len(pool) < F1_IMAGES).tolist()
        batches.append(batch)
    return batches


def shuffled_batches(n_items: int, batch_size: int, seed: int, epoch: int, fraction: float = 1.0) -> List[List[int]]:
    """A reference DataLoader epoch (shuffle, last batch kept); with `fraction` < 1 only the first
    int(fraction * n) + 1 batches (the reference's --epoch_fraction)."""
    sampler = ShuffledBatchSampler(n_items, batch_size, seed=seed, drop_last=False)
    sampler.set_epoch(epoch)
    batches = list(sampler)
    return batches if fraction >= 1 else batches[:int(len(batches) * fraction) + 1]
