#!/usr/bin/env bash
# Real-data CPU runs recorded in results/: Conv-4 ProtoNet and Conv-4 FRN trained with the same
# budget on a dataset in the mini-ImageNet CSV layout, then 5-way 1-shot and 5-shot tests.
#
# Recipe: the official FRN Conv-4 recipe (episodic training from scratch, Adam 1e-3 and wd 5e-4
# as its meta-iNat configs) cut to a CPU budget: SIZE x SIZE images, EPOCHS x EPISODES episodes
# of 20-way SHOT-shot with 10 queries per class, LR x0.1 at epoch MILESTONE. Both methods get
# exactly the same budget. Tests: 600 episodes, 15 queries (the AI Studio FRN reproduction's protocol), seed 0. The
# epoch-1 checkpoints are tested too, to show accuracy rising with training.
#
# Why 1-shot training episodes and small images on CPU: with shot*h*w support vectors close to
# FRN's 64 channels, the ridge regression reconstructs every query almost perfectly, all class
# distances are nearly equal, and FRN first has to grow its scale and alpha - hundreds of epochs
# in the official runs. Few support vectors give it a usable signal from the first episode.
#
# Usage: DATA=/path/to/miniimagenet84_fs100 NAME=mini_imagenet SIZE=42 bash results/run_conv4_cpu.sh
#        (METHODS="protonet" or "meta_frn" runs one of the two)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:?dataset folder in the mini-ImageNet CSV layout}
NAME=${NAME:-mini_imagenet}            # transforms of this dataset name
SIZE=${SIZE:-42}
SHOT=${SHOT:-1}
EPOCHS=${EPOCHS:-6}
EPISODES=${EPISODES:-50}
MILESTONE=${MILESTONE:-5}
OUT=${OUT:-results/runs}
METHODS=${METHODS:-protonet meta_frn}
python write_miniImagenet_filelist.py --data_path "$DATA"
for METHOD in $METHODS; do
  python meta_train.py --dataset "$NAME" --data_path "$DATA" --model Conv4 --method $METHOD --image_size "$SIZE" \
    --train_n_way 20 --n_shot "$SHOT" --n_query 10 --train_n_episode "$EPISODES" --epoch "$EPOCHS" \
    --optimizer adam --lr 1e-3 --gamma 0.1 --milestones "$MILESTONE" --wd 5e-4 --val_n_way 5 --val_n_episode 300 \
    --save_freq 1 --checkpoint_dir "$OUT" --num_workers 2 --quiet
  RUN="$OUT/$NAME/Conv4_${METHOD}_20way_${SHOT}shot_metatrain"
  for CKPT in 1.pdparams best_model.pdparams; do
    for TEST_SHOT in 1 5; do
      echo "== $METHOD $CKPT 5-way $TEST_SHOT-shot"
      python test.py --dataset "$NAME" --data_path "$DATA" --model Conv4 --method $METHOD --image_size "$SIZE" \
        --n_shot $TEST_SHOT --n_query 15 --test_n_way 5 --test_n_episode 600 --seed 0 --model_path "$RUN/$CKPT"
    done
  done
done
