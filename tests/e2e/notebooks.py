"""Running the committed notebooks in tests, as CI does: each notebook's quick preset exactly as
committed, top to bottom, in a temporary copy (only DATA_ROOT and WORK are pointed at tmp_path,
by a cell inserted after the `parameters` cell, papermill's convention), failing on the first
failing cell or past the time budget the notebook states (`frn.notebook.execute`). Nothing is
written into the repository."""
import re
from pathlib import Path
from typing import List, NamedTuple

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from frn import notebook  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
#: the line test.py prints
ACC_LINE = re.compile(r"^\d+ Test Acc = ([\d.]+)% \+- [\d.]+%$", re.M)


def committed(name: str):
    """notebooks/<name>.ipynb as committed."""
    return nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)


def outputs(nb, output_type: str) -> list:
    """Every output of `output_type` ("stream", "display_data", "error", ...) of the code cells."""
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
            if out.output_type == output_type]


class Run(NamedTuple):
    notebook: object        # the executed notebook
    text: str               # everything it printed
    seconds: float
    images: int             # figures it displayed
    work: Path

    def figures(self, names: List[str]) -> None:
        """Assert that WORK/figures/<name>.png was written, with content, for every name."""
        for name in names:
            assert (self.work / "figures" / f"{name}.png").stat().st_size > 1000, name

    def accuracies(self) -> List[float]:
        """The mean accuracy of every `Test Acc` line printed, in order."""
        return [float(mean) for mean in ACC_LINE.findall(self.text)]


def run_quick(name: str, tmp_path: Path, monkeypatch, **parameters) -> Run:
    """Execute the committed notebook's quick preset in a copy, data and work folders in tmp_path
    (and `parameters`, e.g. another VARIANT); raises on a failing cell or past its budget."""
    monkeypatch.setenv("TQDM_DISABLE", "1")  # inherited by the kernel and the scripts it runs
    nb = committed(name)
    work = tmp_path / "work"
    seconds = notebook.execute(nb, str(tmp_path / "data"), str(work), **parameters)
    assert not outputs(nb, "error")
    text = "".join(out.get("text", "") for out in outputs(nb, "stream"))
    images = sum("image/png" in out.get("data", {}) for out in outputs(nb, "display_data"))
    return Run(nb, text, seconds, images, work)


def above_chance(accuracy: float, interval: float, chance: float) -> bool:
    """The accuracy's 95% interval lies above chance."""
    return accuracy - interval > chance
