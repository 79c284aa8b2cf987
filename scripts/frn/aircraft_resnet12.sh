#!/usr/bin/env bash
# FRN, aircraft, ResNet12: episodic training from scratch, then 5-way 1-shot and 5-shot tests.
# Official settings of the FRN code (experiments/Aircraft_fewshot/FRN/ResNet-12/train.sh; spec frn.md §6); paper: Table 5 (not verified, spec §9): 70.17 / 83.81.
# Usage: DATA=/path/to/dataset bash scripts/frn/aircraft_resnet12.sh [extra flags, e.g. --num_workers 8]
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:?set DATA to the dataset folder holding base.json, val.json, novel.json}
TEST="--dataset aircraft --data_path $DATA --model ResNet12 --method meta_frn --n_query 16 --test_n_episode 10000 --gpu"
python meta_train.py --dataset aircraft --data_path "$DATA" --model ResNet12 --method meta_frn \
  --train_n_way 10 --n_shot 5 --n_query 15 --train_n_episode 0 \
  --optimizer sgd --lr 0.1 --gamma 0.1 --step_size 400 --epoch 1200 --wd 5e-4 \
  --val_n_way 5 --val_n_episode 1000 --val_freq 20 --gpu "$@"
MODEL=checkpoints/aircraft/ResNet12_meta_frn_10way_5shot_metatrain/best_model.pdparams
python test.py $TEST --n_shot 1 --model_path $MODEL
python test.py $TEST --n_shot 5 --model_path $MODEL
