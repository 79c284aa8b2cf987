"""notebooks/mtl.ipynb top to bottom on the embedded demo data at tiny size (< 2 minutes on a
CPU): a narrow encoder, 2 epochs of each phase, accuracy before and after the inner loop."""
import re
from pathlib import Path

from tests.e2e.notebooks import check_clean_and_parametrised, demo_parameters, run_on_demo

NOTEBOOK = "mtl.ipynb"
ACC_LINE = re.compile(r"^5-way [15]-shot: \d+ Test Acc = [\d.]+% \+- [\d.]+%$", re.M)
INNER = re.compile(r"^5-way ([15])-shot: accuracy before the inner loop ([\d.]+)% \+- [\d.]+%, after (\d+) steps "
                   r"([\d.]+)% \+- [\d.]+%$", re.M)


def tiny_parameters(tmp_path: Path) -> dict:
    return demo_parameters(tmp_path, ZIP=str(tmp_path / "data" / "unused.zip"), IMAGE_SIZE=32, WIDTHS="4,8,16",
                           SEED=0, PRETRAIN_EPOCHS=2, PRETRAIN_LR=0.1, PRETRAIN_STEP=1, PRETRAIN_GAMMA=0.2,
                           PRETRAIN_BATCH=16, META_EPOCHS=2, META_TASKS=4, META_LR1=1e-4, META_LR2=1e-3, META_STEP=1,
                           META_GAMMA=0.5, META_SHOT=1, BASE_LR=0.05, UPDATE_STEP=10, HT_META_BATCH=2,
                           N_QUERY=5, VAL_EPISODES=5, TEST_EPISODES=10, INNER_LOOP_EPISODES=10)


def test_committed_notebook_is_clean_and_parametrised():
    check_clean_and_parametrised(NOTEBOOK, tiny_parameters(Path("/x")))


def test_notebook_runs_on_tiny_demo_data(tmp_path, monkeypatch):
    params = tiny_parameters(tmp_path)
    run = run_on_demo(NOTEBOOK, params, monkeypatch)
    assert len(ACC_LINE.findall(run.text)) == 2, run.text[-3000:]
    inner = INNER.findall(run.text)
    assert [shot for shot, *_ in inner] == ["1", "5"] and all(steps == "10" for *_, steps, _ in inner), run.text[-2000:]
    assert run.images >= 5, f"{run.images} figures"
    run.figures(params, ["episode", "pretrain_history", "meta_history", "inner_loop", "ss_scales"])
    folder = Path(params["WORK"]) / "checkpoints" / "demo" / "ResNet25_mtl_ht2_5way_1shot_metatrain"
    assert (folder / "best_model.pdparams").is_file() and (folder / "history.json").is_file()
    assert run.seconds < 120, f"notebook took {run.seconds:.0f}s"
