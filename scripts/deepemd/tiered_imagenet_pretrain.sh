#!/usr/bin/env bash
# DeepEMD, tiered_imagenet, ResNet-12: whole-class pre-training of the encoder (train_pretrain.py).
# Official settings (spec deepemd.md §8.1): SGD Nesterov lr 0.1, weight decay 5e-4, StepLR 30 epochs x0.2,
# 120 epochs, batch 128; validation: 100 episodes of 5-way 1-shot DeepEMD-FCN every epoch.
# Usage: DATA=/path/to/dataset bash scripts/deepemd/tiered_imagenet_pretrain.sh [extra flags, e.g. --num_workers 8]
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:?set DATA to the dataset folder holding base.json, val.json, novel.json}
python pretrain.py --dataset tiered_imagenet_deepemd --data_path "$DATA" --model ResNet12 --method deepemd -deepemd fcn \
  --batch_size 128 --optimizer sgd --lr 0.1 --step_size 30 --gamma 0.2 --epoch 120 --wd 5e-4 \
  --val_n_way 5 --n_shot 1 --n_query 15 --val_n_episode 100 --seed 1 --gpu "$@"
