"""The official protocol of the paper rows (configs/), pinned row by row: the class split, the
validation episodes, the starting weights, the headline numbers and the data each row needs, as the
specifications of the reference implementations state them."""
import os
from pathlib import Path
from typing import Dict, List

import pytest

from frn.configs import load_config, parsed_stage, plan, stages_of
from tests.conftest import ROOT

CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if not p.name.startswith("_"))


def rows(method: str) -> List[Path]:
    return [p for p in CONFIGS if p.parent.name == method]


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT / "configs"))


@pytest.fixture
def data_variables(monkeypatch, tmp_path):
    for name in ("DATA", "SPLITS", "WS", "MODEL_PATH", "IMAGENET", "WEBVISION", "CUB", "IMAGENET_R50"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.delenv("CKPT", raising=False)


def parsed_stages(path: Path) -> Dict[str, object]:
    """{stage name: its parsed flags} of every entry-point stage of a row."""
    config = load_config(str(path))
    return {name: parsed_stage(stages_of(config)[name]["script"], argv[1:])
            for name, argv, _ in plan(config) if stages_of(config)[name].get("script", "").endswith(".py")
            and stages_of(config)[name]["script"] in ("pretrain.py", "meta_train.py", "test.py")}


@pytest.mark.parametrize("path", [p for p in rows("neg_margin") if load_config(str(p)).get("common", {}).get("dataset")
                                  == "cub"], ids=relative)
def test_negative_margin_cub_rows_use_the_closerlook_split(path):
    """bl0 and mmfewshot split CUB by the sorted folder position (0-based even -> base); FRN's split
    (1-based class id even -> base) would test on their base classes."""
    data = load_config(str(path))["data"]
    assert "--split closerlook" in data and "--split frn" not in data


@pytest.mark.parametrize("path", [p for p in rows("frn")], ids=relative)
def test_frn_rows_validate_with_16_queries(path, data_variables):
    """The official FRN trainer validates on 1,000 episodes with 16 queries per class (its evaluation
    sampler fixes 16), while its training episodes have 15; the seed README's commands keep 15."""
    from frn.runs import validation_queries
    expected = 15 if path.name == "seed_mini_imagenet.yaml" else 16
    training = {name: args for name, args in parsed_stages(path).items() if args.stage != "test"}
    assert training
    for name, args in training.items():
        assert validation_queries(args) == expected, f"{relative(path)} {name}"
        if args.stage == "meta_train" and expected == 16:
            assert args.n_query == 15 and args.val_n_episode == 1000, f"{relative(path)} {name}"


def headline(value: str) -> str:
    """The first number of a paper entry ("61.2 +- 1.8 with HT ..." -> "61.2")."""
    import re
    return re.search(r"\d+(\.\d+)?", str(value)).group(0)


@pytest.mark.parametrize("shot, number", [("1shot", "61.2"), ("5shot", "75.5")])
def test_mtl_ht_rows_headline_the_ht_number(shot, number):
    """The HT rows' first number is MTL + HT's (the mini-imagenet-tools README), not plain MTL's."""
    key = f"{shot[0]}-shot"
    ht = load_config(str(ROOT / "configs" / "mtl" / f"mini_imagenet_ht_{shot}.yaml"))["paper"]
    plain = load_config(str(ROOT / "configs" / "mtl" / f"mini_imagenet_{shot}.yaml"))["paper"]
    assert headline(ht[key]) == number != headline(plain[key])
    assert "HT" in ht["source"]


@pytest.mark.parametrize("path", [p for p in rows("deepemd") + rows("neg_margin")
                                  if load_config(str(p)).get("common", {}).get("dataset") == "mini_imagenet"
                                  and "bl0" not in p.name], ids=relative)
def test_mini_imagenet_rows_name_the_image_release(path):
    """DeepEMD's maintainers trace 57% vs 66.5% to the mini-ImageNet copy; mmfewshot reads the original
    ImageNet JPEGs: the row must say which images its numbers are for."""
    data = load_config(str(path))["data"]
    if path.parent.name == "deepemd":
        assert "DeepEMD's own mini-ImageNet release" in data and "57%" in data and "66.5%" in data
    else:
        assert "original ImageNet" in data and "84x84" in data


SIMTRANS_TRAINING_ROWS = [p for p in rows("simtrans") if "naive" in stages_of(load_config(str(p)))]


@pytest.mark.parametrize("path", SIMTRANS_TRAINING_ROWS, ids=relative)
def test_simtrans_rows_start_from_torchvisions_imagenet_weights(path, data_variables, monkeypatch):
    """The official code starts steps 0 and 3a from torchvision's ImageNet ResNet-50: the rows read
    it converted (${IMAGENET_R50}), with no silent fallback to Paddle's weights."""
    from frn.weakshot import imagenet_start
    from utils.errors import UserError
    starts = {name: imagenet_start(args) for name, args in parsed_stages(path).items()}
    converted = os.environ["IMAGENET_R50"]
    assert starts["naive"] == ("--imagenet_pretrained", converted)
    assert starts["main"] == ("--imagenet_pretrained", converted)
    assert starts["simnet"] is None and starts["alternate"] is None  # from step 0 and from step 3a
    monkeypatch.delenv("IMAGENET_R50")
    with pytest.raises(UserError, match="IMAGENET_R50.*frn.convert"):
        plan(load_config(str(path)))
