"""Statistics over training seeds for the real-data tables of results/README.md.

Each seed gives one number per row (a test accuracy, a ROC-AUC); the row's mean carries a 95%
interval over the seeds from Student's t with n - 1 degrees of freedom: with 3 seeds the
half-width is 4.30 * sd / sqrt(3), not 1.96 * sd / sqrt(3) (the normal quantile assumes the
standard deviation is known, which three draws do not give). Differences between two rows are
taken per seed (paired: the same seed starts both rows from the same initial weights and batch
order wherever the two rows share them) and get the same interval.
"""
import csv
import json
import math
from pathlib import Path
from typing import Callable, Dict, List, Sequence

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


def finish_summary(result: dict, times_file: Path, group: Callable[[List[str]], str], json_out: str) -> None:
    """Add the CPU minutes (user + system) of the script's /usr/bin/time log, summed per
    `group(row)` and in all, print them, and write `result` to `json_out` (if given)."""
    if times_file.exists():
        totals: Dict[str, float] = {}
        with open(times_file) as f:
            for row in csv.reader(f, delimiter="\t"):
                kind = group(row)
                totals[kind] = totals.get(kind, 0.0) + (float(row[-3]) + float(row[-2])) / 60.0
        totals["all"] = sum(totals.values())
        result["cpu_minutes"] = totals
        print("CPU minutes: " + ", ".join(f"{k} {v:.1f}" for k, v in totals.items()))
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=1) + "\n")
