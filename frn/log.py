"""Run logging: lines to stdout and `output.log`, per-epoch history and curves."""
import json
import os
from typing import Dict, List

from matplotlib.figure import Figure
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
        plot_curves(history, os.path.join(self.folder, "curves.png"))


def plot_curves(history: List[Dict], path: str) -> None:
    """Loss and accuracy per epoch (train and validation) in one PNG."""
    epochs = [h["epoch"] for h in history]
    # A bare Figure (no pyplot): works without a display and leaves a notebook's backend alone.
    fig = Figure(figsize=(9, 3.2))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for key, ax in (("loss", ax_loss), ("acc", ax_acc)):
        for split in ("train", "val"):
            points = [(e, h[f"{split}_{key}"]) for e, h in zip(epochs, history) if h.get(f"{split}_{key}") is not None]
            if points:
                ax.plot(*zip(*points), marker="o", ms=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)" if key == "acc" else "loss")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
