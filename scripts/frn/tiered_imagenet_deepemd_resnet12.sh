#!/usr/bin/env bash
# FRN, tiered_imagenet_deepemd, ResNet-12: whole-class pre-training (stl_frn), 20-way 5-shot episodic fine-tuning (meta_frn), 5-way 1/5-shot tests.
# Official settings of the FRN code (experiments/tiered-ImageNet_DeepEMD/FRN/ResNet-12_{pretrain,finetune}/train.sh; spec frn.md §6); paper: Table 7, FRN with DeepEMD's images: 72.06 +- 0.22 / 86.89 +- 0.14.
# Usage: DATA=/path/to/dataset bash scripts/frn/tiered_imagenet_deepemd_resnet12.sh [extra flags, e.g. --num_workers 8]
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:?set DATA to the dataset folder holding base.json, val.json, novel.json}
TEST="--dataset tiered_imagenet_deepemd --data_path $DATA --model ResNet12 --method meta_frn --n_query 16 --test_n_episode 10000 --gpu"
python pretrain.py --dataset tiered_imagenet_deepemd --data_path "$DATA" --model ResNet12 --method stl_frn \
  --batch_size 128 --optimizer sgd --lr 0.1 --gamma 0.1 --step_size 30 --epoch 90 --wd 5e-4 \
  --val_n_way 5 --n_shot 1 --n_query 16 --val_n_episode 1000 --val_freq 5 --gpu "$@"
python meta_train.py --dataset tiered_imagenet_deepemd --data_path "$DATA" --model ResNet12 --method meta_frn \
  --train_n_way 20 --n_shot 5 --n_query 15 --train_n_episode 0 \
  --optimizer sgd --lr 1e-3 --gamma 0.1 --milestones 40 60 --epoch 70 --wd 5e-4 \
  --val_n_way 5 --val_n_episode 1000 --val_freq 5 --gpu \
  --pretrain_path checkpoints/tiered_imagenet_deepemd/ResNet12_stl_frn_pretrain/best_model.pdparams "$@"
MODEL=checkpoints/tiered_imagenet_deepemd/ResNet12_meta_frn_20way_5shot_metatrain/best_model.pdparams
python test.py $TEST --n_shot 1 --model_path $MODEL
python test.py $TEST --n_shot 5 --model_path $MODEL
