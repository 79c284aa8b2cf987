#!/usr/bin/env bash
# The demo: no download. Builds the embedded glyph dataset (100 classes rendered from the fonts
# matplotlib ships, mini-ImageNet CSV layout), writes its filelists, then runs the seed's three
# commands - pretrain stl_frn, meta-train meta_frn 20-way, test 5-way 1-shot and 5-shot - with a
# budget sized for a 2-core CPU: Conv-4, 32x32 images, a few epochs (about 3-5 minutes).
#
# CPU-budget choices (the paper-scale recipes are in configs/frn/):
# - Adam 1e-3 for meta-training, as the official FRN Conv-4 configs for meta-iNat.
# - stl_frn pre-training is the official recipe for ResNet-12 only (its features are divided by
#   sqrt(640)). On Conv-4's unnormalised features its class-pool distances are in the tens: with
#   SGD the first steps drive the learned scale to 0, with Adam 1e-3 the backbone drifts and the
#   following meta-training stalls at chance (measured). The demo keeps the step, so the seed's
#   pipeline runs end to end, at Adam 1e-4 for one epoch: it barely moves the backbone, and the
#   accuracy comes from meta-training.
# - 1-shot training episodes: with many support vectors per class (shot x h x w close to the 64
#   channels) the ridge regression reconstructs every query almost perfectly and FRN needs
#   hundreds of epochs to grow its scale; few support vectors give it a signal at once.
# Usage: bash scripts/demo.sh [--gpu]      (DEMO_DIR / DEMO_CHECKPOINTS move the outputs)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DEMO_DIR:-demo_data/glyphs}
CKPT=${DEMO_CHECKPOINTS:-checkpoints}
COMMON=(--dataset demo --data_path "$DATA" --model Conv4 --image_size 32 --checkpoint_dir "$CKPT" "$@")
RUNS="$CKPT/demo"  # run folders: <checkpoint_dir>/<dataset>/<run>

python -m data.demo --out "$DATA" --image_size 32
python write_miniImagenet_filelist.py --data_path "$DATA"
# --overwrite: running the demo again starts its runs afresh
python pretrain.py "${COMMON[@]}" --overwrite --method stl_frn --epoch 1 --batch_size 64 --optimizer adam --lr 1e-4 \
  --milestones 10 --n_shot 1 --n_query 15 --val_n_episode 200
python meta_train.py "${COMMON[@]}" --overwrite --method meta_frn --train_n_way 20 --n_shot 1 --n_query 5 \
  --train_n_episode 40 --epoch 5 --optimizer adam --lr 1e-3 --milestones 4 --val_n_episode 200 \
  --pretrain_path "$RUNS/Conv4_stl_frn_pretrain/best_model.pdparams"
for SHOT in 1 5; do
  python test.py "${COMMON[@]}" --method meta_frn --n_shot $SHOT --n_query 15 --test_n_episode 600 \
    --model_path "$RUNS/Conv4_meta_frn_20way_1shot_metatrain/best_model.pdparams"
done
