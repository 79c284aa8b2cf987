"""The paper rows that were shell scripts (scripts/<method>/*.sh, replaced by configs/) are all still
there, and each config's training stages write the run folders its script wrote: checkpoints trained
with the scripts are found, and skipped as done, by the configs (tests/frn/former_rows.yaml)."""
import os

import pytest
import yaml

from frn.configs import load_config, parsed_stage, plan, stages_of
from tests.conftest import ROOT

FORMER_ROWS = yaml.safe_load((ROOT / "tests" / "frn" / "former_rows.yaml").read_text())


@pytest.fixture
def no_checkpoint_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("CKPT", raising=False)
    for name in ("DATA", "SPLITS", "WS", "MODEL_PATH", "IMAGENET", "WEBVISION", "CUB", "IMAGENET_R50"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))


def test_every_former_script_has_its_config():
    scripts = [script for row in FORMER_ROWS.values() for script in row["replaces"]]
    assert len(scripts) == len(set(scripts)) == 65, "the 65 scripts of scripts/<method>/, each replaced once"
    missing = sorted(config for config in FORMER_ROWS if not (ROOT / "configs" / config).is_file())
    assert not missing, f"configs of former scripts missing: {missing}"
    assert not list((ROOT / "scripts").glob("*/*.sh")), "paper rows belong in configs/, not in scripts/<method>/"


@pytest.mark.parametrize("config", sorted(FORMER_ROWS))
def test_training_stages_write_the_scripts_run_folders(config, no_checkpoint_variable):
    steps = plan(load_config(str(ROOT / "configs" / config)))
    folders = [os.path.relpath(folder, "checkpoints") for _, _, folder in steps if folder]
    assert folders == FORMER_ROWS[config]["run_folders"]


def test_a_shared_run_folder_means_the_same_training(no_checkpoint_variable):
    """Rows share a training stage (DeepEMD's FCN pre-training, MTL's phase 1) only when its flags
    are the same: the runner skips a stage whose folder holds a finished run, so a folder must name one
    training (the AI Studio reproduction's row and the official mini-ImageNet row once shared theirs)."""
    trainings = {}
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        relative = str(path.relative_to(ROOT / "configs"))
        if path.name.startswith("_"):
            continue
        config = load_config(str(path))
        for name, argv, folder in plan(config):
            if folder:
                settings = vars(parsed_stage(stages_of(config)[name]["script"], argv[1:]))
                settings = {k: v for k, v in settings.items() if k not in ("config", "config_stage")}
                earlier = trainings.setdefault(folder, (relative, settings))
                assert earlier[1] == settings, f"{relative} and {earlier[0]} train {folder} differently"
