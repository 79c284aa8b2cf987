#!/usr/bin/env bash
# Real-data CPU runs recorded in results/: Conv-4 ProtoNet and Conv-4 FRN trained with the same
# budget on a dataset in the mini-ImageNet CSV layout, then 5-way 1-shot and 5-shot tests.
#
# Recipe: the official FRN Conv-4 recipe (episodic training from scratch, 20-way 5-shot, SGD
# Nesterov lr 0.1, wd 5e-4) cut to a CPU budget: EPOCHS x EPISODES episodes of 20-way 5-shot
# with 10 queries per class (300 images per episode), LR x0.1 at epoch MILESTONE. Tests: 600
# episodes, 15 queries (the seed's protocol), seed 0. Checkpoints of epoch 1 are tested too, to
# show accuracy rising with training.
#
# Usage: DATA=/path/to/miniimagenet84_fs100 NAME=mini_imagenet SIZE=84 bash results/run_conv4_cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:?dataset folder in the mini-ImageNet CSV layout}
NAME=${NAME:-mini_imagenet}            # transforms of this dataset name
SIZE=${SIZE:-84}
EPOCHS=${EPOCHS:-4}
EPISODES=${EPISODES:-30}
MILESTONE=${MILESTONE:-3}
OUT=${OUT:-results/runs}
python write_miniImagenet_filelist.py --data_path "$DATA"
for METHOD in protonet meta_frn; do
  python meta_train.py --dataset "$NAME" --data_path "$DATA" --model Conv4 --method $METHOD --image_size "$SIZE" \
    --train_n_way 20 --n_shot 5 --n_query 10 --train_n_episode "$EPISODES" --epoch "$EPOCHS" \
    --lr 0.1 --gamma 0.1 --milestones "$MILESTONE" --wd 5e-4 --val_n_way 5 --val_n_episode 300 \
    --save_freq 1 --checkpoint_dir "$OUT" --num_workers 2 --quiet
  RUN="$OUT/$NAME/Conv4_${METHOD}_20way_5shot_metatrain"
  for CKPT in 1.pdparams best_model.pdparams; do
    for SHOT in 1 5; do
      echo "== $METHOD $CKPT 5-way $SHOT-shot"
      python test.py --dataset "$NAME" --data_path "$DATA" --model Conv4 --method $METHOD --image_size "$SIZE" \
        --n_shot $SHOT --n_query 15 --test_n_way 5 --test_n_episode 600 --seed 0 --model_path "$RUN/$CKPT"
    done
  done
done
