"""Helpers shared by the AI Studio notebooks: run an entry script with its output streamed into
the notebook, and display a figure while keeping a PNG copy.

A notebook first finds the repository (the folder holding pretrain.py) and puts it on sys.path;
only then can it import this module.
"""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(script: str, *args) -> str:
    """Run `python script args` in the repository, print its output as it comes, raise when it
    fails; returns the whole output."""
    args = [str(a) for a in args]
    print("$ python", script, " ".join(args), flush=True)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.setdefault("TQDM_DISABLE", "1")   # progress bars do not render through a pipe
    lines = []
    with subprocess.Popen([sys.executable, script, *args], cwd=REPO, env=env, text=True, bufsize=1,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line)
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed with exit code {proc.returncode} (see its output above)")
    return "".join(lines)


def show(fig, name: str, folder: str) -> str:
    """Display a matplotlib figure in the notebook and save it as <folder>/<name>.png (returned)."""
    from IPython.display import Image, display
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.png")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    display(Image(filename=path))
    return path
