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
    sampler fixes 16), while its training episodes have 15; the AI Studio FRN reproduction's commands keep 15."""
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
    for name, expected in (("naive", ("--imagenet_pretrained", converted)),
                           ("main", ("--imagenet_pretrained", converted)), ("simnet", None), ("alternate", None)):
        if name in starts:  # the SimNet starts from step 0, step 3b from step 3a
            assert starts[name] == expected, name
    monkeypatch.delenv("IMAGENET_R50")
    with pytest.raises(UserError, match="IMAGENET_R50.*frn.convert"):
        plan(load_config(str(path)))


ABLATIONS = {  # row -> (the row it varies, {stage: {option: value}})
    "cub_clean_all.yaml": ("cub.yaml", {"naive": {"exp_type": "CleanAll"}, "test": {"exp_type": "CleanAll"}}),
    "cub_clean_base.yaml": ("cub.yaml", {"naive": {"exp_type": "CleanBase"}, "test": {"exp_type": "CleanBase"}}),
    "cub_noisy_frac.yaml": ("cub.yaml", {"simnet": {"noisy_frac": 0.2}}),
    "cub_source_noisy_novel.yaml": ("cub.yaml", {"simnet": {"source_set": "noisy_novel"}}),
    "cub_source_clean_novel.yaml": ("cub.yaml", {"simnet": {"source_set": "clean_novel"}}),
    "car_source_noisy_base.yaml": ("car.yaml", {"simnet": {"source_set": "noisy_base"}}),
    "car_novel_split.yaml": ("car.yaml", {}),
}


def test_every_simtrans_ablation_has_its_row():
    written = {p.name for p in rows("simtrans")}
    assert set(ABLATIONS) <= written and "webvision.yaml" in written


@pytest.mark.parametrize("row", sorted(ABLATIONS))
def test_a_simtrans_ablation_row_changes_only_its_option(row, data_variables):
    """Each ablation row sets its option on the step the reference sets it on; the steps it changes
    write run folders of their own, the steps it shares (step 0) the base row's."""
    base_row, changes = ABLATIONS[row]
    path, base_path = ROOT / "configs" / "simtrans" / row, ROOT / "configs" / "simtrans" / base_row
    stages, base_stages = parsed_stages(path), parsed_stages(base_path)
    for stage, options in changes.items():
        for name, value in options.items():
            assert getattr(stages[stage].options, name) == value, (stage, name)
            assert getattr(base_stages[stage].options, name, None) != value, (stage, name)
    folders = {name: folder for name, _, folder in plan(load_config(str(path))) if folder}
    base_folders = {name: folder for name, _, folder in plan(load_config(str(base_path))) if folder}
    changed = [name for name in folders if name != "naive" or "naive" in changes or row == "car_novel_split.yaml"]
    for name in folders:
        if name in changed:
            assert folders[name] != base_folders[name], name
        else:
            assert folders[name] == base_folders[name], name


def test_the_novel_split_row_writes_its_own_weakshot_folder(data_variables):
    config = load_config(str(ROOT / "configs" / "simtrans" / "car_novel_split.yaml"))
    argv = {name: argv for name, argv, _ in plan(config)}["weakshot_data"]
    assert argv[argv.index("--novel_split") + 1] == "108"
    assert argv[argv.index("--out_dir") + 1] == os.environ["WS"] + "_novel108"


def test_the_webvision_row_builds_the_references_split(data_variables):
    config = load_config(str(ROOT / "configs" / "simtrans" / "webvision.yaml"))
    argv = plan(config)[0][1]
    assert argv[:3] == ["-m", "data.weakshot", "webvision"] and "--data_path" not in argv
    assert argv[argv.index("--imagenet") + 1] == os.environ["IMAGENET"]
    assert argv[argv.index("--webvision") + 1] == os.environ["WEBVISION"]
    assert "--novel_split" not in argv  # the builder's default: the reference's 118


@pytest.mark.parametrize("row", ["meta_inat_conv4.yaml", "tiered_meta_inat_conv4.yaml", "protonet_meta_inat_conv4.yaml",
                                 "protonet_tiered_meta_inat_conv4.yaml"])
def test_meta_inat_rows_as_the_official_scripts(row, data_variables):
    """Adam 1e-3 x0.5 every 20 epochs for 100, Conv-4, type-1 training crops and type-2 test images,
    no validation split: the final model is tested."""
    from data.transforms import DATASET_TRANSFORMS
    stages = parsed_stages(ROOT / "configs" / "frn" / row)
    ways = {}
    for args in stages.values():
        assert args.model == "Conv4" and DATASET_TRANSFORMS[args.dataset] == (1, 2)
        if args.stage == "meta_train":
            assert (args.optimizer, args.lr, args.gamma, args.step_size, args.epoch) == ("adam", 1e-3, 0.5, 20, 100)
            ways[args.n_shot] = args.train_n_way
        else:
            assert args.model_path.endswith("/last_model.pdparams") and args.test_n_episode == 10000
    assert ways == ({5: 20} if not row.startswith("protonet") else {1: 30, 5: 20})


@pytest.mark.parametrize("row, ways", [("protonet_aircraft_conv4.yaml", {1: 30, 5: 20}),
                                       ("protonet_aircraft_resnet12.yaml", {1: 15, 5: 10})])
def test_aircraft_protonet_rows(row, ways, data_variables):
    stages = parsed_stages(ROOT / "configs" / "frn" / row)
    trained = {a.n_shot: a.train_n_way for a in stages.values() if a.stage == "meta_train"}
    assert trained == ways
    assert all((a.dataset, a.epoch, a.step_size, a.lr) == ("aircraft", 1200, 400, 0.1)
               for a in stages.values() if a.stage == "meta_train")


def test_mini_imagenet_to_cub_tests_the_mini_imagenet_model_on_cub(data_variables):
    cross, mini = (load_config(str(ROOT / "configs" / "frn" / name))
                   for name in ("mini_imagenet_to_cub_resnet12.yaml", "mini_imagenet_resnet12.yaml"))
    assert [f for _, _, f in plan(cross) if f] == [f for _, _, f in plan(mini) if f]  # trained once, shared
    tests = {name: args for name, args in parsed_stages(ROOT / "configs" / "frn" / "mini_imagenet_to_cub_resnet12.yaml")
             .items() if args.stage == "test"}
    assert {(a.dataset, a.data_path, a.n_query) for a in tests.values()} == {("cub", os.environ["CUB"], 16)}
    assert "--split closerlook" in cross["data"]


@pytest.mark.parametrize("row", ["bl0_mini2cub_resnet18_neg-cosine_5shot.yaml",
                                 "bl0_mini2cub_resnet18_neg-softmax_5shot.yaml"])
def test_negative_margin_mini_to_cub_rows(row, data_variables):
    """bl0's mini2CUB: a 100-row head over every mini-ImageNet class, no dropout, 400 epochs."""
    config = load_config(str(ROOT / "configs" / "neg_margin" / row))
    train = parsed_stages(ROOT / "configs" / "neg_margin" / row)["pretrain"]
    assert (train.num_classes, train.epoch, train.warmup_epochs, train.options.drop_rate) == (100, 400, 100, 0.0)
    assert "--dataset cross_domain" in config["data"] and "--split closerlook" in config["data"]
    assert set(config["paper"]) == {"source", "5-shot"}


@pytest.mark.parametrize("row", ["cub_fcn.yaml", "fc100_fcn.yaml"])
def test_deepemd_cub_and_fc100_numbers_are_labelled_cvpr(row):
    paper = load_config(str(ROOT / "configs" / "deepemd" / row))["paper"]
    assert "CVPR 2020 version" in paper["source"] and "1-shot" in paper and "5-shot" in paper
