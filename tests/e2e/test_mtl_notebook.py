"""notebooks/mtl.ipynb top to bottom on the embedded demo data at tiny size (< 2 minutes on a CPU).

The `parameters` cell keeps its AI Studio defaults; a cell inserted after it (papermill's
convention) overrides them: paths in tmp_path, demo data, a narrow encoder, CPU, 2 epochs.
"""
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from tests.e2e.test_notebook import execute, outputs  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "mtl.ipynb"
ACC_LINE = re.compile(r"^5-way [15]-shot: \d+ Test Acc = [\d.]+% \+- [\d.]+%$", re.M)
INNER = re.compile(r"^5-way ([15])-shot: accuracy before the inner loop ([\d.]+)% \+- [\d.]+%, after (\d+) steps "
                   r"([\d.]+)% \+- [\d.]+%$", re.M)


def tiny_parameters(tmp_path: Path) -> dict:
    data, work = tmp_path / "data", tmp_path / "work"
    return dict(DATA_ROOT=str(data), WORK=str(work), ZIP=str(data / "unused.zip"), USE_DEMO_DATA=True,
                DEMO_CLASSES=18, DEMO_IMAGES=12, DEMO_SPLITS=(8, 5, 5), IMAGE_SIZE=32, WIDTHS="4,8,16",
                GPU=False, NUM_WORKERS=0, SEED=0,
                PRETRAIN_EPOCHS=2, PRETRAIN_LR=0.1, PRETRAIN_STEP=1, PRETRAIN_GAMMA=0.2, PRETRAIN_BATCH=16,
                META_EPOCHS=2, META_TASKS=4, META_LR1=1e-4, META_LR2=1e-3, META_STEP=1, META_GAMMA=0.5, META_SHOT=1,
                BASE_LR=0.05, UPDATE_STEP=10, HT_META_BATCH=2,
                N_QUERY=5, VAL_EPISODES=5, TEST_EPISODES=10, INNER_LOOP_EPISODES=10)


def test_committed_notebook_is_clean_and_parametrised():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), "the first code cell must be the parameters cell"
    for name in tiny_parameters(Path("/x")):
        assert re.search(rf"^{name} = ", code[0].source, re.M), name
    assert '"/home/aistudio/data"' in code[0].source and '"/home/aistudio/work"' in code[0].source
    assert all(not cell.outputs and cell.execution_count is None for cell in code), "clear the outputs"


def test_notebook_runs_on_tiny_demo_data(tmp_path, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("FSL_REPO", str(ROOT))
    params = tiny_parameters(tmp_path)
    nb, elapsed = execute(NOTEBOOK, params)

    assert not outputs(nb, "error")
    text = "".join(out.get("text", "") for out in outputs(nb, "stream"))
    assert len(ACC_LINE.findall(text)) == 2, text[-3000:]
    inner = INNER.findall(text)
    assert [shot for shot, *_ in inner] == ["1", "5"] and all(steps == "10" for *_, steps, _ in inner), text[-2000:]
    images = [out for out in outputs(nb, "display_data") if "image/png" in out.get("data", {})]
    assert len(images) >= 5, f"{len(images)} figures"
    for name in ("episode", "pretrain_history", "meta_history", "inner_loop", "ss_scales"):
        assert (Path(params["WORK"]) / "figures" / f"{name}.png").stat().st_size > 1000, name
    run = Path(params["WORK"]) / "checkpoints" / "demo" / "ResNet25_mtl_ht2_5way_1shot_metatrain"
    assert (run / "best_model.pdparams").is_file() and (run / "history.json").is_file()
    assert elapsed < 120, f"notebook took {elapsed:.0f}s"
