"""The committed notebooks as a reader sees them on GitHub or AI Studio, without running them:
a setup cell first, a parameters cell on the quick preset with AI Studio's folders, outputs of
the quick run of exactly the committed code, small, and no path of the machine that made them."""
import json
import re

import pytest

from tests.e2e.notebooks import ROOT, committed, notebook

NAMES = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
#: folders of a machine (Linux, macOS, Windows homes and temporaries); outputs show placeholders
#: (DATA_ROOT/..., WORK/..., ./...) instead, code cells only AI Studio's documented folders
MACHINE_PATH = re.compile(r"(/(?:work|tmp|root|home|Users|private|var/folders)\b|[A-Za-z]:\\\\(?:Users|Temp))")
AI_STUDIO = re.compile(r"/home/aistudio/(?:data|work)\b")
#: a committed notebook with its outputs stays readable on GitHub
MAX_BYTES = 500 * 1024


def test_every_notebook_is_listed():
    assert set(NAMES) == {"deepemd", "frn_mini_imagenet", "mtl", "neg_margin", "predict", "simtrans"}


@pytest.mark.parametrize("name", NAMES)
def test_setup_then_parameters(name):
    code = [cell for cell in committed(name).cells if cell.cell_type == "code"]
    assert "setup" in code[0].metadata.get("tags", []) and "scripts/setup_env.py" in code[0].source
    params = code[1]
    assert "parameters" in params.metadata.get("tags", []), "the second code cell must be the parameters cell"
    assert re.search(r'^PRESET = "quick"', params.source, re.M), "committed on the quick preset"
    assert re.search(r"^RESUME = False", params.source, re.M)
    assert re.search(r'^DATA_ROOT = "/home/aistudio/data"', params.source, re.M)
    assert re.search(r'^WORK = "/home/aistudio/work"', params.source, re.M)


@pytest.mark.parametrize("name", NAMES)
def test_outputs_are_those_of_the_committed_code(name):
    """Regenerate with `python -m frn.notebook --execute NAME` after changing a code cell."""
    nb = committed(name)
    run = nb.metadata.get("quick_preset_run", {})
    assert run.get("sources_sha256") == notebook.sources_digest(nb), "outputs are stale: re-execute the notebook"
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code), "every code cell ran"
    assert not any(out.output_type == "error" for cell in code for out in cell.outputs)
    assert sum("image/png" in out.get("data", {}) for cell in code for out in cell.outputs) >= 1, "figures"
    assert run.get("seconds", 1e9) < notebook.budget_seconds(nb)
    assert notebook.measured_label(run["seconds"]) in nb.cells[0].source, \
        "the run-time table shows the measured time"


@pytest.mark.parametrize("name", NAMES)
def test_small(name):
    assert (ROOT / "notebooks" / f"{name}.ipynb").stat().st_size < MAX_BYTES


@pytest.mark.parametrize("name", NAMES)
def test_no_machine_paths(name):
    nb = committed(name)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            found = MACHINE_PATH.findall(AI_STUDIO.sub("", cell.source))
            assert not found, f"cell {index} code: {found}"
        for out in cell.get("outputs", []):
            # every text of the output: streams, tracebacks, text/plain and other non-image data
            texts = [out.get("text", ""), *out.get("traceback", []),
                     *(value if isinstance(value, str) else json.dumps(value)
                       for kind, value in out.get("data", {}).items() if not kind.startswith("image/"))]
            found = [m for text in texts
                     for m in MACHINE_PATH.findall(text if isinstance(text, str) else "".join(text))]
            assert not found, f"cell {index} output: {found}"
    found = MACHINE_PATH.findall(json.dumps(nb.metadata))
    assert not found, f"metadata: {found}"
