"""The AI Studio notebook top to bottom on the embedded demo data at tiny size (< 2 minutes on a CPU).

The `parameters`-tagged cell keeps its defaults; a cell inserted right after it (papermill's
convention) overrides them: paths in tmp_path, demo data, Conv-4, CPU, 2 epochs, few episodes.
"""
import re
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "frn_mini_imagenet.ipynb"
CELL_TIMEOUT = 100  # seconds per cell
ACC_LINE = re.compile(r"^\d+ Test Acc = [\d.]+% \+- [\d.]+%$", re.M)


def tiny_parameters(tmp_path: Path) -> dict:
    """Notebook parameters for a run of a few seconds per stage."""
    data, work = tmp_path / "data", tmp_path / "work"
    return dict(DATA_ROOT=str(data), WORK=str(work), ZIP=str(data / "unused.zip"), USE_DEMO_DATA=True,
                DEMO_CLASSES=18, DEMO_IMAGES=12, DEMO_SPLITS=(8, 5, 5), IMAGE_SIZE=32,
                MODEL="Conv4", GPU=False, NUM_WORKERS=0, SEED=0,
                PRETRAIN_EPOCHS=2, PRETRAIN_LR=0.05, PRETRAIN_MILESTONES=[1], PRETRAIN_BATCH=16,
                META_EPOCHS=2, META_LR=1e-3, META_MILESTONES=[1], TRAIN_EPISODES=4, TRAIN_WAY=5, META_SHOT=5,
                N_QUERY=5, VAL_EPISODES=10, TEST_EPISODES=20, TEST_TASKS=1)


def inject_parameters(nb, params: dict) -> None:
    """Insert a cell assigning `params` right after the cell tagged `parameters`."""
    index = next(i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", []))
    source = "\n".join(f"{name} = {value!r}" for name, value in params.items())
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(index + 1, cell)


def execute(notebook: Path, params: dict) -> tuple:
    """Run `notebook` with `params` injected after its parameters cell, in the repository
    folder; returns (the executed notebook, seconds taken). Raises on the first failing cell."""
    nb = nbformat.read(notebook, as_version=4)
    inject_parameters(nb, params)
    start = time.time()
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT,
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    return nb, time.time() - start


def outputs(nb, output_type: str):
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
            if out.output_type == output_type]


def check_clean_and_parametrised(path: Path, names) -> None:
    """The committed notebook has no outputs and its first code cell, tagged `parameters`,
    assigns every name in `names`."""
    nb = nbformat.read(path, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), "the first code cell must be the parameters cell"
    for name in names:
        assert re.search(rf"^{name} = ", code[0].source, re.M), name
    assert all(not cell.outputs and cell.execution_count is None for cell in code), "clear the outputs"


def test_committed_notebook_is_clean_and_parametrised():
    check_clean_and_parametrised(NOTEBOOK, ("DATA_ROOT", "WORK", "ZIP", "USE_DEMO_DATA", "MODEL", "GPU",
                                            "PRETRAIN_EPOCHS"))


def test_notebook_runs_on_tiny_demo_data(tmp_path, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")  # inherited by the kernel and the scripts it runs
    monkeypatch.setenv("FSL_REPO", str(ROOT))
    params = tiny_parameters(tmp_path)
    nb, elapsed = execute(NOTEBOOK, params)

    assert not outputs(nb, "error")
    text = "".join(out.get("text", "") for out in outputs(nb, "stream"))
    assert len(ACC_LINE.findall(text)) == 2, text[-3000:]  # 1-shot and 5-shot
    assert re.search(r"^5-way 1-shot: \d+ Test Acc", text, re.M) and re.search(r"^5-way 5-shot: ", text, re.M)
    images = [out for out in outputs(nb, "display_data") if "image/png" in out.get("data", {})]
    assert len(images) >= 5, f"{len(images)} figures"  # episode, 2 histories, curves.png, reconstruction
    figures = Path(params["WORK"]) / "figures"
    for name in ("episode", "pretrain_history", "meta_history", "reconstruction"):
        assert (figures / f"{name}.png").stat().st_size > 1000, name
    run = Path(params["WORK"]) / "checkpoints" / "demo" / "Conv4_meta_frn_5way_5shot_metatrain"
    assert (run / "best_model.pdparams").is_file() and (run / "history.json").is_file()
    assert elapsed < 120, f"notebook took {elapsed:.0f}s"
