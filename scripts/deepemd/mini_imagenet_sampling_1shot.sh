#!/usr/bin/env bash
# DeepEMD-Sampling, mini_imagenet, ResNet-12, 5-way 1-shot (one row of the DeepEMD README table).
# Paper (DeepEMD v2, README of icoz69/DeepEMD): 68.77 (1-shot) / 84.13 (5-shot); this script: the 1-shot number.
# Official protocol (spec deepemd.md §8): meta-train 5-way 1-shot 15-query from the pre-trained encoder, SGD Nesterov
# lr 5e-4, StepLR 10 epochs x0.5, 100 epochs x 50 episodes, OpenCV solver; test 5000 episodes, 15 queries.
# As the authors did, 5-shot tests use the 1-shot model. The pre-trained encoder comes from mini_imagenet_pretrain.sh.
# Usage: DATA=/path/to/dataset bash scripts/deepemd/mini_imagenet_sampling_1shot.sh [extra flags, e.g. --num_workers 8]
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:?set DATA to the dataset folder holding base.json, val.json, novel.json}
VARIANT="-deepemd sampling -num_patch 9"
RUN=checkpoints/mini_imagenet/ResNet12_deepemd_sampling_5way_1shot_metatrain
if [ ! -f "$RUN/best_model.pdparams" ]; then
  python meta_train.py --dataset mini_imagenet --data_path "$DATA" --model ResNet12 --method deepemd $VARIANT -solver opencv \
    -way 5 -shot 1 -query 15 --train_n_episode 50 --epoch 100 --optimizer sgd --lr 5e-4 --step_size 10 --gamma 0.5 \
    --wd 5e-4 --val_n_episode 1000 -sfc_lr 0.1 --seed 1 --gpu \
    --pretrain_path checkpoints/mini_imagenet/ResNet12_deepemd_fcn_pretrain/best_model.pdparams "$@"
fi
python test.py --dataset mini_imagenet --data_path "$DATA" --model ResNet12 --method deepemd $VARIANT \
  -way 5 -shot 1 -query 15 -test_episode 5000 --seed 1 --gpu --model_path "$RUN/best_model.pdparams" "$@"
