#!/usr/bin/env bash
# MTL, FC100, ResNet-25: phase 1, whole-class pre-training of the encoder (run_pre.py).
# Official settings (spec mtl.md §5.1): 60-way classifier (2-layer MLP head), SGD Nesterov lr 0.1, momentum 0.9,
# weight decay 5e-4, StepLR 30 epochs x0.2, 110 epochs, batch 128; Resize(92) -> RandomResizedCrop(88) -> CenterCrop(80)
# -> flip; every epoch 600 validation tasks of 5-way 1-shot with the preval inner loop (100 steps of 0.01).
# Usage: DATA=/path/to/dataset bash scripts/mtl/fc100_pretrain.sh [extra flags, e.g. --num_workers 8]
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:?set DATA to the dataset folder holding base.json, val.json, novel.json}
python pretrain.py --dataset fc100 --data_path "$DATA" --model ResNet25 --method mtl --image_size 80 \
  --pre_max_epoch 110 --pre_batch_size 128 --pre_lr 0.1 --pre_gamma 0.2 --pre_step_size 30 \
  --pre_custom_momentum 0.9 --pre_custom_weight_decay 0.0005 --way 5 --shot 1 --val_query 15 --val_n_episode 600 \
  --gpu "$@"
