#!/usr/bin/env bash
# ProtoNet baseline (FRN repo models/Proto.py), cub, ResNet12: one model per shot, then its 5-way test.
# Official settings of the FRN code (experiments/CUB_fewshot_raw/Proto/ResNet-12/train.sh; spec frn.md §6); paper: Table 4, ProtoNet†: 78.60 +- 0.22 / 89.73 +- 0.12.
# Usage: DATA=/path/to/dataset bash scripts/frn/protonet_cub_raw_resnet12.sh [extra flags, e.g. --num_workers 8]
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:?set DATA to the dataset folder holding base.json, val.json, novel.json}
for SHOT in 1 5; do
  WAY=$([ $SHOT = 1 ] && echo 15 || echo 10)
  python meta_train.py --dataset cub --data_path "$DATA" --model ResNet12 --method protonet \
    --train_n_way $WAY --n_shot $SHOT --n_query 15 --train_n_episode 0 \
    --optimizer sgd --lr 0.1 --gamma 0.1 --step_size 400 --epoch 1200 --wd 5e-4 \
    --val_n_way 5 --val_n_episode 1000 --val_freq 20 --gpu "$@"
  python test.py --dataset cub --data_path "$DATA" --model ResNet12 --method protonet --n_shot $SHOT \
    --n_query 16 --test_n_episode 10000 --gpu \
    --model_path checkpoints/cub/ResNet12_protonet_${WAY}way_${SHOT}shot_metatrain/best_model.pdparams
done
