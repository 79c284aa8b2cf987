"""Summary statistics of few-shot evaluation."""
from typing import Sequence, Tuple

import numpy as np


def mean_and_interval(accs: Sequence[float]) -> Tuple[float, float]:
    """Mean and 95% half-width 1.96 * sqrt(var / n) with the population variance (numpy's
    default), as the official FRN `get_score`."""
    accs = np.asarray(accs, dtype=np.float64)
    return float(accs.mean()), float(1.96 * np.sqrt(accs.var() / len(accs)))
