"""Summary statistics of few-shot evaluation."""
from typing import TYPE_CHECKING, Tuple

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike


def mean_and_interval(accs: "ArrayLike") -> Tuple[float, float]:
    """Mean and 95% half-width 1.96 * sqrt(var / n) with the population variance (numpy's
    default), as the official FRN `get_score`."""
    values = np.asarray(accs, dtype=np.float64)
    return float(values.mean()), float(1.96 * np.sqrt(values.var() / len(values)))


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax of scores [n, classes] in float64 (the probabilities predict.py, infer.py
    and test.py --save_predictions print)."""
    z = np.asarray(scores, dtype=np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def roc_auc(scores: "ArrayLike", positives: "ArrayLike") -> float:
    """Area under the ROC curve of `scores` ranking the `positives` first: the probability that a
    random positive outscores a random negative, ties counting one half (Mann-Whitney U)."""
    values = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positives, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC-AUC needs both positives and negatives")
    from scipy.stats import rankdata  # here: scipy.stats takes a while to import, and only SimTrans ranks
    ranks = np.empty(len(values), dtype=np.float64)
    ranked = ~np.isnan(values)
    ranks[ranked] = rankdata(values[ranked])  # 1-based, ties get their average rank
    ranks[~ranked] = np.arange(ranked.sum() + 1, len(values) + 1)  # NaNs last, each its own rank, in order
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
