#!/usr/bin/env bash
# The demo: no download. Builds the embedded glyph dataset (100 classes rendered from the fonts
# matplotlib ships, mini-ImageNet CSV layout), writes its filelists, then runs the seed's three
# commands - pretrain stl_frn, meta-train meta_frn 20-way 5-shot, test 5-way 1-shot and 5-shot -
# with a budget sized for a 2-core CPU (Conv-4, 84x84, a few epochs; about 6-8 minutes).
# Usage: bash scripts/demo.sh [--gpu]      (DEMO_DIR / DEMO_CHECKPOINTS move the outputs)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DEMO_DIR:-demo_data/glyphs}
CKPT=${DEMO_CHECKPOINTS:-checkpoints}
COMMON=(--dataset demo --data_path "$DATA" --model Conv4 --image_size 84 --checkpoint_dir "$CKPT" "$@")

python -m data.demo --out "$DATA"
python write_miniImagenet_filelist.py --data_path "$DATA"
# Adam, as the official FRN Conv-4 configs for meta-iNat: with SGD, Conv-4's unnormalised
# features give stl_frn distances in the tens, and the first steps drive the learned scale to 0.
python pretrain.py "${COMMON[@]}" --method stl_frn --epoch 3 --batch_size 64 --optimizer adam --lr 1e-3 \
  --milestones 10 --n_shot 1 --n_query 15 --val_n_episode 100
python meta_train.py "${COMMON[@]}" --method meta_frn --train_n_way 20 --n_shot 5 --n_query 5 \
  --train_n_episode 15 --epoch 2 --optimizer adam --lr 1e-3 --milestones 10 --val_n_episode 100 \
  --pretrain_path "$CKPT/demo/Conv4_stl_frn_pretrain/best_model.pdparams"
for SHOT in 1 5; do
  python test.py "${COMMON[@]}" --method meta_frn --n_shot $SHOT --n_query 15 --test_n_episode 600 \
    --model_path "$CKPT/demo/Conv4_meta_frn_20way_5shot_metatrain/best_model.pdparams"
done
