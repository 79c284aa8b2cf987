"""notebooks/neg_margin.ipynb top to bottom on the embedded demo data at tiny size (< 2 minutes
on a CPU): two margins, two shots, and the accuracy-against-margin plot."""
import re
from pathlib import Path

import pytest

pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from tests.e2e.test_notebook import ACC_LINE, check_clean_and_parametrised, execute, outputs  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "neg_margin.ipynb"


def tiny_parameters(tmp_path: Path) -> dict:
    data, work = tmp_path / "data", tmp_path / "work"
    return dict(DATA_ROOT=str(data), WORK=str(work), ZIP=str(data / "unused.zip"), USE_DEMO_DATA=True,
                DEMO_CLASSES=18, DEMO_IMAGES=12, DEMO_SPLITS=(8, 5, 5), IMAGE_SIZE=32, MODEL="Conv4", GPU=False,
                NUM_WORKERS=0, SEED=0, PROTOCOL="mmfs", MARGINS=[-0.1, 0.0], EPOCHS=2, LR=0.05, MILESTONES=[1],
                WARMUP_ITERS=3, BATCH=16, NUM_CLASSES=10, VAL_EPISODES=10, VAL_FREQ=1, SHOTS=[1, 5], N_QUERY=5,
                TEST_EPISODES=20, FINETUNE_STEPS=20)


def test_committed_notebook_is_clean_and_parametrised():
    check_clean_and_parametrised(NOTEBOOK, tiny_parameters(Path("/x")))


def test_notebook_runs_on_tiny_demo_data(tmp_path, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")  # inherited by the kernel and the scripts it runs
    monkeypatch.setenv("FSL_REPO", str(ROOT))
    params = tiny_parameters(tmp_path)
    nb, elapsed = execute(NOTEBOOK, params)

    assert not outputs(nb, "error")
    text = "".join(out.get("text", "") for out in outputs(nb, "stream"))
    assert len(ACC_LINE.findall(text)) == 4, text[-3000:]  # 2 margins x 2 shots
    assert re.search(r"^5-way 1-shot: best margin -?[\d.]+ with [\d.]+%", text, re.M), text[-2000:]
    figures = Path(params["WORK"]) / "figures"
    for name in ("episode", "margin_curves", "accuracy_vs_margin"):
        assert (figures / f"{name}.png").stat().st_size > 1000, name
    runs = Path(params["WORK"]) / "checkpoints" / "demo"
    assert {p.name for p in runs.iterdir()} == {"Conv4_neg_margin_mmfs_cosineface_m-0.1_pretrain",
                                                "Conv4_neg_margin_mmfs_cosineface_m0_pretrain"}
    assert elapsed < 120, f"notebook took {elapsed:.0f}s"
