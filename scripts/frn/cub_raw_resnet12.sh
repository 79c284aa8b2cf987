#!/usr/bin/env bash
# FRN, cub, ResNet12: episodic training from scratch, then 5-way 1-shot and 5-shot tests.
# Official settings of the FRN code (experiments/CUB_fewshot_raw/FRN/ResNet-12/train.sh; spec frn.md §6); paper: Table 4, FRN ResNet-12: 83.55 +- 0.19 / 92.92 +- 0.10.
# Usage: DATA=/path/to/dataset bash scripts/frn/cub_raw_resnet12.sh [extra flags, e.g. --num_workers 8]
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:?set DATA to the dataset folder holding base.json, val.json, novel.json}
TEST="--dataset cub --data_path $DATA --model ResNet12 --method meta_frn --n_query 16 --test_n_episode 10000 --gpu"
python meta_train.py --dataset cub --data_path "$DATA" --model ResNet12 --method meta_frn \
  --train_n_way 10 --n_shot 5 --n_query 15 --train_n_episode 0 \
  --optimizer sgd --lr 0.1 --gamma 0.1 --step_size 400 --epoch 1200 --wd 5e-4 \
  --val_n_way 5 --val_n_episode 1000 --val_freq 20 --gpu "$@"
MODEL=checkpoints/cub/ResNet12_meta_frn_10way_5shot_metatrain/best_model.pdparams
python test.py $TEST --n_shot 1 --model_path $MODEL
python test.py $TEST --n_shot 5 --model_path $MODEL
