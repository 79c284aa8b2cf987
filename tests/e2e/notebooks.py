"""Running the AI Studio notebooks in tests: each test module overrides a notebook's
`parameters`-tagged cell with a cell inserted right after it (papermill's convention) that points
the notebook at tmp_path and the embedded demo data at tiny sizes, runs it top to bottom with
nbclient, and checks what it printed and drew."""
import re
import time
from pathlib import Path
from typing import List, NamedTuple

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[2]
CELL_TIMEOUT = 100  # seconds per cell
#: the line test.py prints
ACC_LINE = re.compile(r"^\d+ Test Acc = [\d.]+% \+- [\d.]+%$", re.M)


def demo_parameters(tmp_path: Path, **specific) -> dict:
    """The parameters every notebook shares (paths in tmp_path, the demo glyphs: 18 classes of
    12 images split 8/5/5, CPU, no loader workers), plus the notebook's own `specific` ones."""
    return dict(DATA_ROOT=str(tmp_path / "data"), WORK=str(tmp_path / "work"), USE_DEMO_DATA=True,
                DEMO_CLASSES=18, DEMO_IMAGES=12, DEMO_SPLITS=(8, 5, 5), GPU=False, NUM_WORKERS=0, **specific)


def inject_parameters(nb, params: dict) -> None:
    """Insert a cell assigning `params` right after the cell tagged `parameters`."""
    index = next(i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", []))
    cell = nbformat.v4.new_code_cell("\n".join(f"{name} = {value!r}" for name, value in params.items()))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(index + 1, cell)


def outputs(nb, output_type: str) -> list:
    """Every output of `output_type` ("stream", "display_data", "error", ...) of the code cells."""
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
            if out.output_type == output_type]


class Run(NamedTuple):
    notebook: object        # the executed notebook
    text: str               # everything it printed
    seconds: float
    images: int             # figures it displayed

    def figures(self, params: dict, names: List[str]) -> None:
        """Assert that WORK/figures/<name>.png was written, with content, for every name."""
        for name in names:
            assert (Path(params["WORK"]) / "figures" / f"{name}.png").stat().st_size > 1000, name


def run_on_demo(notebook: str, params: dict, monkeypatch) -> Run:
    """Run notebooks/`notebook` with `params` injected, quiet progress bars, from the repository
    folder; fails on the first cell that raises."""
    monkeypatch.setenv("TQDM_DISABLE", "1")  # inherited by the kernel and the scripts it runs
    monkeypatch.setenv("FSL_REPO", str(ROOT))
    nb = nbformat.read(ROOT / "notebooks" / notebook, as_version=4)
    inject_parameters(nb, params)
    start = time.time()
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT,
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    seconds = time.time() - start
    assert not outputs(nb, "error")
    text = "".join(out.get("text", "") for out in outputs(nb, "stream"))
    images = sum("image/png" in out.get("data", {}) for out in outputs(nb, "display_data"))
    return Run(nb, text, seconds, images)


def check_clean_and_parametrised(notebook: str, names) -> None:
    """The committed notebook has no outputs, its first code cell is tagged `parameters`, assigns
    every name in `names` and defaults to AI Studio's folders."""
    nb = nbformat.read(ROOT / "notebooks" / notebook, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), "the first code cell must be the parameters cell"
    for name in names:
        assert re.search(rf"^{name} = ", code[0].source, re.M), name
    assert "/home/aistudio" in code[0].source, "AI Studio paths by default"
    assert all(not cell.outputs and cell.execution_count is None for cell in code), "clear the outputs"
