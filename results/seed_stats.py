"""Statistics over training seeds for the real-data tables of results/README.md.

Each seed gives one number per row (a test accuracy, a ROC-AUC); the row's mean carries a 95%
interval over the seeds from Student's t with n - 1 degrees of freedom: with 3 seeds the
half-width is 4.30 * sd / sqrt(3), not 1.96 * sd / sqrt(3) (the normal quantile assumes the
standard deviation is known, which three draws do not give). Differences between two rows are
taken per seed (paired: the same seed starts both rows from the same initial weights and batch
order wherever the two rows share them) and get the same interval.
"""
import math
from typing import Dict, Sequence

import numpy as np
from scipy import stats


def seed_summary(values: Sequence[float]) -> Dict[str, object]:
    """{"values", "n", "mean", "sd", "half_width"}: the mean of the per-seed values and the
    half-width of its 95% t interval (NaN with fewer than 2 seeds)."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    sd = float(x.std(ddof=1)) if n > 1 else math.nan
    half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)) if n > 1 else math.nan
    return {"values": [float(v) for v in x], "n": n, "mean": float(x.mean()), "sd": sd, "half_width": half}


def format_summary(summary: Dict[str, object], digits: int = 2) -> str:
    """'mean ± half-width' of a seed_summary."""
    return f"{summary['mean']:.{digits}f} ± {summary['half_width']:.{digits}f}"


def excludes_zero(summary: Dict[str, object]) -> bool:
    """Whether the 95% interval of a paired difference lies entirely on one side of zero."""
    return abs(summary["mean"]) > summary["half_width"]
