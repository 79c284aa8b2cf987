"""MTL's inner loop and Negative-Margin's sweeps: accuracy against steps or the margin, several runs' curves."""
import math
from typing import Dict, List, Tuple, Union

import numpy as np
from matplotlib.figure import Figure

from frn.log import finish_epoch_figure, load_history, series
from frn.viz.common import finish_single_axes


def plot_inner_loop(traces: Dict[str, np.ndarray], title: str = "") -> Figure:
    """Query accuracy against inner-loop steps: `traces` maps a label (e.g. "5-way 1-shot") to
    an [episodes, steps + 1] array of accuracies (%), step 0 being the initialisation. Draws
    the mean with its 95% interval band."""
    fig = Figure(figsize=(6.5, 3.6))
    ax = fig.subplots()
    for label, trace in traces.items():
        trace = np.asarray(trace, dtype=np.float64)
        mean = trace.mean(0)
        half = 1.96 * trace.std(0) / math.sqrt(len(trace))
        steps = np.arange(trace.shape[1])
        ax.plot(steps, mean, label=f"{label}: {mean[0]:.1f}% -> {mean[-1]:.1f}%")
        ax.fill_between(steps, mean - half, mean + half, alpha=0.2)
    return finish_single_axes(fig, ax, "inner-loop step (base learner updates on the support set)",
                              "query accuracy (%)", title)


def plot_accuracy_vs_margin(results: Dict[int, Dict[float, Tuple[float, float]]], title: str = "") -> Figure:
    """Novel-class accuracy against the training margin: `results[shot][margin] = (mean %, 95%
    half-width)`, one line with error bars per shot; margin 0 (the plain cosine softmax) marked."""
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    for shot, by_margin in sorted(results.items()):
        margins = sorted(by_margin)
        means = [by_margin[m][0] for m in margins]
        intervals = [by_margin[m][1] for m in margins]
        ax.errorbar(margins, means, yerr=intervals, marker="o", ms=4, capsize=3, label=f"5-way {shot}-shot")
    ax.axvline(0.0, color="grey", ls=":", lw=1)
    return finish_single_axes(fig, ax, "margin m of the base-training head (negative: looser)",
                              "novel-class accuracy (%)", title)


def plot_val_curves(runs: Dict[str, Union[str, List[Dict]]], title: str = "") -> Figure:
    """Validation accuracy per epoch of several runs (label -> history or run folder), with the
    training loss beside it: how the runs of a sweep learn."""
    fig = Figure(figsize=(9, 3.4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for label, history in runs.items():
        history = load_history(history)
        for key, ax in (("train_loss", ax_loss), ("val_acc", ax_acc)):
            epochs, values = series(history, key)
            if epochs:
                ax.plot(epochs, values, marker="o", ms=3, label=label)
    return finish_epoch_figure(fig, ((ax_loss, "training loss"), (ax_acc, "validation accuracy (%)")), title)
