"""The paper rows that were shell scripts (scripts/<method>/*.sh, replaced by configs/) are all still
there, and each config's training stages write the run folders its script wrote: checkpoints trained
with the scripts are found, and skipped as done, by the configs.

The tables were generated from the scripts' own commands, captured before they were removed and
compared flag by flag, parsed, with the configs' stages."""
import os

import pytest

from frn.configs import load_config, parsed_stage, plan, stages_of
from tests.conftest import ROOT

#: former script (below scripts/) -> the config (below configs/) that runs its commands
FORMER_SCRIPTS = {
    "deepemd/mini_imagenet_fcn_1shot.sh": "deepemd/mini_imagenet_fcn.yaml",
    "deepemd/mini_imagenet_fcn_5shot.sh": "deepemd/mini_imagenet_fcn.yaml",
    "deepemd/mini_imagenet_grid_1shot.sh": "deepemd/mini_imagenet_grid.yaml",
    "deepemd/mini_imagenet_grid_5shot.sh": "deepemd/mini_imagenet_grid.yaml",
    "deepemd/mini_imagenet_pretrain.sh": "deepemd/mini_imagenet_fcn.yaml",
    "deepemd/mini_imagenet_sampling_1shot.sh": "deepemd/mini_imagenet_sampling.yaml",
    "deepemd/mini_imagenet_sampling_5shot.sh": "deepemd/mini_imagenet_sampling.yaml",
    "deepemd/tiered_imagenet_fcn_1shot.sh": "deepemd/tiered_imagenet_fcn.yaml",
    "deepemd/tiered_imagenet_fcn_5shot.sh": "deepemd/tiered_imagenet_fcn.yaml",
    "deepemd/tiered_imagenet_grid_1shot.sh": "deepemd/tiered_imagenet_grid.yaml",
    "deepemd/tiered_imagenet_grid_5shot.sh": "deepemd/tiered_imagenet_grid.yaml",
    "deepemd/tiered_imagenet_pretrain.sh": "deepemd/tiered_imagenet_fcn.yaml",
    "deepemd/tiered_imagenet_sampling_1shot.sh": "deepemd/tiered_imagenet_sampling.yaml",
    "deepemd/tiered_imagenet_sampling_5shot.sh": "deepemd/tiered_imagenet_sampling.yaml",
    "frn/aircraft_conv4.sh": "frn/aircraft_conv4.yaml",
    "frn/aircraft_resnet12.sh": "frn/aircraft_resnet12.yaml",
    "frn/cub_cropped_conv4.sh": "frn/cub_cropped_conv4.yaml",
    "frn/cub_cropped_resnet12.sh": "frn/cub_cropped_resnet12.yaml",
    "frn/cub_raw_resnet12.sh": "frn/cub_raw_resnet12.yaml",
    "frn/mini_imagenet_resnet12.sh": "frn/mini_imagenet_resnet12.yaml",
    "frn/protonet_cub_cropped_conv4.sh": "frn/protonet_cub_cropped_conv4.yaml",
    "frn/protonet_cub_cropped_resnet12.sh": "frn/protonet_cub_cropped_resnet12.yaml",
    "frn/protonet_cub_raw_resnet12.sh": "frn/protonet_cub_raw_resnet12.yaml",
    "frn/seed_mini_imagenet.sh": "frn/seed_mini_imagenet.yaml",
    "frn/tiered_imagenet_deepemd_resnet12.sh": "frn/tiered_imagenet_deepemd_resnet12.yaml",
    "frn/tiered_imagenet_resnet12.sh": "frn/tiered_imagenet_resnet12.yaml",
    "mtl/fc100_1shot.sh": "mtl/fc100_1shot.yaml",
    "mtl/fc100_5shot.sh": "mtl/fc100_5shot.yaml",
    "mtl/mini_imagenet_1shot.sh": "mtl/mini_imagenet_1shot.yaml",
    "mtl/mini_imagenet_5shot.sh": "mtl/mini_imagenet_5shot.yaml",
    "mtl/mini_imagenet_ht_1shot.sh": "mtl/mini_imagenet_ht_1shot.yaml",
    "mtl/mini_imagenet_ht_5shot.sh": "mtl/mini_imagenet_ht_5shot.yaml",
    "mtl/tiered_imagenet_1shot.sh": "mtl/tiered_imagenet_1shot.yaml",
    "mtl/tiered_imagenet_5shot.sh": "mtl/tiered_imagenet_5shot.yaml",
    "neg_margin/bl0_cub_resnet18_neg-cosine_1shot.sh": "neg_margin/bl0_cub_resnet18_neg-cosine_1shot.yaml",
    "neg_margin/bl0_cub_resnet18_neg-cosine_5shot.sh": "neg_margin/bl0_cub_resnet18_neg-cosine_5shot.yaml",
    "neg_margin/bl0_cub_resnet18_neg-softmax_1shot.sh": "neg_margin/bl0_cub_resnet18_neg-softmax_1shot.yaml",
    "neg_margin/bl0_cub_resnet18_neg-softmax_5shot.sh": "neg_margin/bl0_cub_resnet18_neg-softmax_5shot.yaml",
    "neg_margin/bl0_mini_imagenet_resnet12_neg-cosine_1shot.sh": "neg_margin/bl0_mini_imagenet_resnet12_neg-cosine_1shot.yaml",
    "neg_margin/bl0_mini_imagenet_resnet12_neg-cosine_5shot.sh": "neg_margin/bl0_mini_imagenet_resnet12_neg-cosine_5shot.yaml",
    "neg_margin/bl0_mini_imagenet_resnet12_neg-softmax_1shot.sh": "neg_margin/bl0_mini_imagenet_resnet12_neg-softmax_1shot.yaml",
    "neg_margin/bl0_mini_imagenet_resnet12_neg-softmax_5shot.sh": "neg_margin/bl0_mini_imagenet_resnet12_neg-softmax_5shot.yaml",
    "neg_margin/bl0_mini_imagenet_resnet18_neg-cosine_1shot.sh": "neg_margin/bl0_mini_imagenet_resnet18_neg-cosine_1shot.yaml",
    "neg_margin/bl0_mini_imagenet_resnet18_neg-cosine_5shot.sh": "neg_margin/bl0_mini_imagenet_resnet18_neg-cosine_5shot.yaml",
    "neg_margin/bl0_mini_imagenet_resnet18_neg-softmax_1shot.sh": "neg_margin/bl0_mini_imagenet_resnet18_neg-softmax_1shot.yaml",
    "neg_margin/bl0_mini_imagenet_resnet18_neg-softmax_5shot.sh": "neg_margin/bl0_mini_imagenet_resnet18_neg-softmax_5shot.yaml",
    "neg_margin/cub_conv4_1shot.sh": "neg_margin/cub_conv4.yaml",
    "neg_margin/cub_conv4_5shot.sh": "neg_margin/cub_conv4.yaml",
    "neg_margin/cub_resnet12_1shot.sh": "neg_margin/cub_resnet12.yaml",
    "neg_margin/cub_resnet12_5shot.sh": "neg_margin/cub_resnet12.yaml",
    "neg_margin/mini_imagenet_conv4_1shot.sh": "neg_margin/mini_imagenet_conv4.yaml",
    "neg_margin/mini_imagenet_conv4_5shot.sh": "neg_margin/mini_imagenet_conv4.yaml",
    "neg_margin/mini_imagenet_resnet12_1shot.sh": "neg_margin/mini_imagenet_resnet12.yaml",
    "neg_margin/mini_imagenet_resnet12_5shot.sh": "neg_margin/mini_imagenet_resnet12.yaml",
    "neg_margin/tiered_imagenet_conv4_1shot.sh": "neg_margin/tiered_imagenet_conv4.yaml",
    "neg_margin/tiered_imagenet_conv4_5shot.sh": "neg_margin/tiered_imagenet_conv4.yaml",
    "neg_margin/tiered_imagenet_resnet12_1shot.sh": "neg_margin/tiered_imagenet_resnet12.yaml",
    "neg_margin/tiered_imagenet_resnet12_5shot.sh": "neg_margin/tiered_imagenet_resnet12.yaml",
    "simtrans/aircraft.sh": "simtrans/aircraft.yaml",
    "simtrans/car.sh": "simtrans/car.yaml",
    "simtrans/cub.sh": "simtrans/cub.yaml",
    "simtrans/eval.sh": "simtrans/eval.yaml",
}

#: config -> the run folders of its training stages, in order, below ${CKPT} (./checkpoints)
RUN_FOLDERS = {
    "deepemd/mini_imagenet_fcn.yaml": ["mini_imagenet/ResNet12_deepemd_fcn_pretrain", "mini_imagenet/ResNet12_deepemd_fcn_5way_1shot_metatrain"],
    "deepemd/mini_imagenet_grid.yaml": ["mini_imagenet/ResNet12_deepemd_fcn_pretrain", "mini_imagenet/ResNet12_deepemd_grid_5way_1shot_metatrain"],
    "deepemd/mini_imagenet_sampling.yaml": ["mini_imagenet/ResNet12_deepemd_fcn_pretrain", "mini_imagenet/ResNet12_deepemd_sampling_5way_1shot_metatrain"],
    "deepemd/tiered_imagenet_fcn.yaml": ["tiered_imagenet_deepemd/ResNet12_deepemd_fcn_pretrain", "tiered_imagenet_deepemd/ResNet12_deepemd_fcn_5way_1shot_metatrain"],
    "deepemd/tiered_imagenet_grid.yaml": ["tiered_imagenet_deepemd/ResNet12_deepemd_fcn_pretrain", "tiered_imagenet_deepemd/ResNet12_deepemd_grid_5way_1shot_metatrain"],
    "deepemd/tiered_imagenet_sampling.yaml": ["tiered_imagenet_deepemd/ResNet12_deepemd_fcn_pretrain", "tiered_imagenet_deepemd/ResNet12_deepemd_sampling_5way_1shot_metatrain"],
    "frn/aircraft_conv4.yaml": ["aircraft/Conv4_meta_frn_20way_5shot_metatrain"],
    "frn/aircraft_resnet12.yaml": ["aircraft/ResNet12_meta_frn_10way_5shot_metatrain"],
    "frn/cub_cropped_conv4.yaml": ["cub_cropped/Conv4_meta_frn_20way_5shot_metatrain"],
    "frn/cub_cropped_resnet12.yaml": ["cub_cropped/ResNet12_meta_frn_10way_5shot_metatrain"],
    "frn/cub_raw_resnet12.yaml": ["cub/ResNet12_meta_frn_10way_5shot_metatrain"],
    "frn/mini_imagenet_resnet12.yaml": ["mini_imagenet/ResNet12_stl_frn_pretrain", "mini_imagenet/ResNet12_meta_frn_20way_5shot_metatrain"],
    "frn/protonet_cub_cropped_conv4.yaml": ["cub_cropped/Conv4_protonet_30way_1shot_metatrain", "cub_cropped/Conv4_protonet_20way_5shot_metatrain"],
    "frn/protonet_cub_cropped_resnet12.yaml": ["cub_cropped/ResNet12_protonet_15way_1shot_metatrain", "cub_cropped/ResNet12_protonet_10way_5shot_metatrain"],
    "frn/protonet_cub_raw_resnet12.yaml": ["cub/ResNet12_protonet_15way_1shot_metatrain", "cub/ResNet12_protonet_10way_5shot_metatrain"],
    "frn/seed_mini_imagenet.yaml": ["mini_imagenet/ResNet12_stl_frn_pretrain", "mini_imagenet/ResNet12_meta_frn_20way_5shot_metatrain"],
    "frn/tiered_imagenet_deepemd_resnet12.yaml": ["tiered_imagenet_deepemd/ResNet12_stl_frn_pretrain", "tiered_imagenet_deepemd/ResNet12_meta_frn_20way_5shot_metatrain"],
    "frn/tiered_imagenet_resnet12.yaml": ["tiered_imagenet/ResNet12_stl_frn_pretrain", "tiered_imagenet/ResNet12_meta_frn_20way_5shot_metatrain"],
    "mtl/fc100_1shot.yaml": ["fc100/ResNet25_mtl_pretrain", "fc100/ResNet25_mtl_5way_1shot_metatrain"],
    "mtl/fc100_5shot.yaml": ["fc100/ResNet25_mtl_pretrain", "fc100/ResNet25_mtl_5way_5shot_metatrain"],
    "mtl/mini_imagenet_1shot.yaml": ["mini_imagenet/ResNet25_mtl_pretrain", "mini_imagenet/ResNet25_mtl_5way_1shot_metatrain"],
    "mtl/mini_imagenet_5shot.yaml": ["mini_imagenet/ResNet25_mtl_pretrain", "mini_imagenet/ResNet25_mtl_5way_5shot_metatrain"],
    "mtl/mini_imagenet_ht_1shot.yaml": ["mini_imagenet/ResNet25_mtl_pretrain", "mini_imagenet/ResNet25_mtl_ht5_5way_1shot_metatrain"],
    "mtl/mini_imagenet_ht_5shot.yaml": ["mini_imagenet/ResNet25_mtl_pretrain", "mini_imagenet/ResNet25_mtl_ht5_5way_5shot_metatrain"],
    "mtl/tiered_imagenet_1shot.yaml": ["tiered_imagenet/ResNet25_mtl_pretrain", "tiered_imagenet/ResNet25_mtl_5way_1shot_metatrain"],
    "mtl/tiered_imagenet_5shot.yaml": ["tiered_imagenet/ResNet25_mtl_pretrain", "tiered_imagenet/ResNet25_mtl_5way_5shot_metatrain"],
    "neg_margin/bl0_cub_resnet18_neg-cosine_1shot.yaml": ["bl0/bl0_cub_resnet18_neg-cosine_1shot/cub/ResNet18_neg_margin_bl0_cosineface_m-0.01_pretrain"],
    "neg_margin/bl0_cub_resnet18_neg-cosine_5shot.yaml": ["bl0/bl0_cub_resnet18_neg-cosine_5shot/cub/ResNet18_neg_margin_bl0_cosineface_m-0.01_pretrain"],
    "neg_margin/bl0_cub_resnet18_neg-softmax_1shot.yaml": ["bl0/bl0_cub_resnet18_neg-softmax_1shot/cub/ResNet18_neg_margin_bl0_neg-softmax_m-0.05_pretrain"],
    "neg_margin/bl0_cub_resnet18_neg-softmax_5shot.yaml": ["bl0/bl0_cub_resnet18_neg-softmax_5shot/cub/ResNet18_neg_margin_bl0_neg-softmax_m-0.005_pretrain"],
    "neg_margin/bl0_mini_imagenet_resnet12_neg-cosine_1shot.yaml": ["bl0/bl0_mini_imagenet_resnet12_neg-cosine_1shot/mini_imagenet/ResNet12_neg_margin_bl0_cosineface_m-0.02_pretrain"],
    "neg_margin/bl0_mini_imagenet_resnet12_neg-cosine_5shot.yaml": ["bl0/bl0_mini_imagenet_resnet12_neg-cosine_5shot/mini_imagenet/ResNet12_neg_margin_bl0_cosineface_m-0.01_pretrain"],
    "neg_margin/bl0_mini_imagenet_resnet12_neg-softmax_1shot.yaml": ["bl0/bl0_mini_imagenet_resnet12_neg-softmax_1shot/mini_imagenet/ResNet12_neg_margin_bl0_neg-softmax_m-0.01_pretrain"],
    "neg_margin/bl0_mini_imagenet_resnet12_neg-softmax_5shot.yaml": ["bl0/bl0_mini_imagenet_resnet12_neg-softmax_5shot/mini_imagenet/ResNet12_neg_margin_bl0_neg-softmax_m-0.1_pretrain"],
    "neg_margin/bl0_mini_imagenet_resnet18_neg-cosine_1shot.yaml": ["bl0/bl0_mini_imagenet_resnet18_neg-cosine_1shot/mini_imagenet/ResNet18_neg_margin_bl0_cosineface_m-0.05_pretrain"],
    "neg_margin/bl0_mini_imagenet_resnet18_neg-cosine_5shot.yaml": ["bl0/bl0_mini_imagenet_resnet18_neg-cosine_5shot/mini_imagenet/ResNet18_neg_margin_bl0_cosineface_m-0.02_pretrain"],
    "neg_margin/bl0_mini_imagenet_resnet18_neg-softmax_1shot.yaml": ["bl0/bl0_mini_imagenet_resnet18_neg-softmax_1shot/mini_imagenet/ResNet18_neg_margin_bl0_neg-softmax_m-0.3_pretrain"],
    "neg_margin/bl0_mini_imagenet_resnet18_neg-softmax_5shot.yaml": ["bl0/bl0_mini_imagenet_resnet18_neg-softmax_5shot/mini_imagenet/ResNet18_neg_margin_bl0_neg-softmax_m-0.3_pretrain"],
    "neg_margin/cub_conv4.yaml": ["cub/Conv4_neg_margin_mmfs_cosineface_m-0.01_pretrain"],
    "neg_margin/cub_resnet12.yaml": ["cub/ResNet12_neg_margin_mmfs_cosineface_m-0.01_pretrain"],
    "neg_margin/mini_imagenet_conv4.yaml": ["mini_imagenet/Conv4_neg_margin_mmfs_cosineface_m-0.005_pretrain"],
    "neg_margin/mini_imagenet_resnet12.yaml": ["mini_imagenet/ResNet12_neg_margin_mmfs_cosineface_m-0.005_pretrain"],
    "neg_margin/tiered_imagenet_conv4.yaml": ["tiered_imagenet/Conv4_neg_margin_mmfs_cosineface_m-0.02_pretrain"],
    "neg_margin/tiered_imagenet_resnet12.yaml": ["tiered_imagenet/ResNet12_neg_margin_mmfs_cosineface_m-0.01_pretrain"],
    "simtrans/aircraft.yaml": ["aircraft/ResNet50_simtrans_naive", "aircraft/ResNet50_simtrans_simnet_h4_b0", "aircraft/ResNet50_simtrans_main_savg1", "aircraft/ResNet50_simtrans_alternate_GCN_a0.1_avg1"],
    "simtrans/car.yaml": ["cars/ResNet50_simtrans_naive", "cars/ResNet50_simtrans_simnet_h4_b0", "cars/ResNet50_simtrans_main_savg1", "cars/ResNet50_simtrans_alternate_GCN_a0.1_avg1"],
    "simtrans/cub.yaml": ["cub/ResNet50_simtrans_naive", "cub/ResNet50_simtrans_simnet_h4_b0", "cub/ResNet50_simtrans_main_savg1", "cub/ResNet50_simtrans_alternate_GCN_a0.1_avg1"],
    "simtrans/eval.yaml": [],
}
#: configs that share a run folder with another config while training it differently, as their
#: scripts did: the seed README's commands write the official mini-ImageNet row's folders
DIFFERENT_TRAINING_SAME_FOLDER = {"frn/seed_mini_imagenet.yaml"}


@pytest.fixture
def no_checkpoint_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("CKPT", raising=False)
    for name in ("DATA", "SPLITS", "WS", "MODEL_PATH"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))


def test_every_former_script_has_its_config():
    missing = sorted(s for s, c in FORMER_SCRIPTS.items() if not (ROOT / "configs" / c).is_file())
    assert not missing, f"former scripts without their config: {missing}"
    assert not list((ROOT / "scripts").glob("*/*.sh")), "paper rows belong in configs/, not in scripts/<method>/"


@pytest.mark.parametrize("config", sorted(RUN_FOLDERS))
def test_training_stages_write_the_scripts_run_folders(config, no_checkpoint_variable):
    folders = [os.path.relpath(d, "checkpoints") for _, _, d in plan(load_config(str(ROOT / "configs" / config))) if d]
    assert folders == RUN_FOLDERS[config]


def test_a_shared_run_folder_means_the_same_training(no_checkpoint_variable):
    """Rows share a training stage (DeepEMD's FCN pre-training, MTL's phase 1, a Negative-Margin base
    training tested at two shots) only when its flags are the same: the runner skips a stage whose
    folder holds a best model, so a folder must name one training."""
    trainings = {}
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        relative = str(path.relative_to(ROOT / "configs"))
        if path.name.startswith("_") or relative in DIFFERENT_TRAINING_SAME_FOLDER:
            continue
        config = load_config(str(path))
        for name, argv, folder in plan(config):
            if folder:
                settings = vars(parsed_stage(stages_of(config)[name]["script"], argv[1:]))
                settings = {k: v for k, v in settings.items() if k not in ("config", "config_stage")}
                earlier = trainings.setdefault(folder, (relative, settings))
                assert earlier[1] == settings, f"{relative} and {earlier[0]} train {folder} differently"
