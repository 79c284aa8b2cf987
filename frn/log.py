"""Run logging: lines to stdout and `output.log`, the per-epoch history (`history.json`) and
its curves (`curves.png`)."""
import json
import os
from typing import Callable, Dict, List, Sequence, Tuple, Union

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from tqdm import tqdm


class RunLog:
    """Prints lines and appends them to `<folder>/output.log`; draws the training curves."""

    def __init__(self, folder: str, quiet: bool = False):
        self.folder = folder
        self.quiet = quiet
        os.makedirs(folder, exist_ok=True)
        self._file = open(os.path.join(folder, "output.log"), "a")

    def __call__(self, line: str) -> None:
        if not self.quiet:
            tqdm.write(line)  # keeps an active progress bar intact
        self._file.write(line + "\n")
        self._file.flush()

    def record(self, history: List[Dict]) -> None:
        """Rewrite history.json and curves.png from the per-epoch history."""
        with open(os.path.join(self.folder, "history.json"), "w") as f:
            json.dump(history, f, indent=1)
        plot_history(history).savefig(os.path.join(self.folder, "curves.png"), dpi=90)


class ScalarLog:
    """Training scalars for VisualDL (`--visualdl DIR`, the PaddleClas convention; view them with
    `visualdl --logdir DIR`): an optional dependency. Without it (or without a folder) it records
    nothing; a missing VisualDL is said once, in one line, and training goes on."""

    def __init__(self, folder: str, notice: Callable[[str], None]):
        self.writer = None
        if not folder:
            return
        try:
            from visualdl import LogWriter
        except Exception as err:  # ImportError, or a VisualDL that breaks on import (e.g. its protobuf)
            missing = isinstance(err, ImportError)
            state = "not installed" if missing else f"broken ({str(err).splitlines()[0]})"
            notice(f"--visualdl: VisualDL is {state}; training goes on without it (pip install visualdl to get "
                   f"the dashboard)")
            return
        os.makedirs(folder, exist_ok=True)
        self.writer = LogWriter(logdir=folder)

    def __call__(self, values: Dict[str, float], step: int) -> None:
        """Record each {tag: value} at `step`."""
        if self.writer is None:
            return
        for tag, value in values.items():
            self.writer.add_scalar(tag=tag, value=float(value), step=int(step))
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def load_history(history: Union[str, List[Dict]]) -> List[Dict]:
    """A run's history: the list itself, a history.json path, or a run folder holding one."""
    if isinstance(history, (str, os.PathLike)):
        path = os.path.join(history, "history.json") if os.path.isdir(history) else history
        with open(path) as f:
            return json.load(f)
    return list(history)


def series(history: List[Dict], key: str) -> Tuple[List[int], List[float]]:
    """(epochs, values) of `key` over the epochs where it was recorded."""
    points = [(h["epoch"], h[key]) for h in history if h.get(key) is not None]
    return ([e for e, _ in points], [v for _, v in points]) if points else ([], [])


def plot_history(history: Union[str, List[Dict]], title: str = "") -> Figure:
    """Loss and accuracy per epoch (train and validation) from a run's history.json list
    (frn/engine.py), with the best validation epoch marked."""
    history = load_history(history)
    fig = Figure(figsize=(9, 3.4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for key, ax in (("loss", ax_loss), ("acc", ax_acc)):
        for split in ("train", "val"):
            epochs, values = series(history, f"{split}_{key}")
            if epochs:
                ax.plot(epochs, values, marker="o", ms=3, label=split)
    epochs, accs = series(history, "val_acc")
    if accs:
        best = int(np.argmax(accs))
        ax_acc.axvline(epochs[best], color="grey", ls=":", lw=1)
        ax_acc.annotate(f"best val {accs[best]:.1f}%", (epochs[best], accs[best]), fontsize=8,
                        textcoords="offset points", xytext=(4, -12))
    return finish_epoch_figure(fig, ((ax_loss, "loss"), (ax_acc, "accuracy (%)")), title)


def finish_epoch_figure(fig: Figure, axes: Sequence[Tuple[Axes, str]], title: str = "") -> Figure:
    """Label per-epoch axes (x: integer epochs, y: `unit`), add grids, legends and the title."""
    for ax, unit in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
