#!/usr/bin/env bash
# MTL, mini-ImageNet, ResNet-25, 5-way 5-shot: phases 2 and 3 (run_meta.py), one cell of the results table.
# Reported (spec mtl.md §6): paper 74.3 +- 0.9 (75.5 +- 0.8 in the authors' mini-imagenet-tools README, presumably with HT), official TensorFlow code 74.3 +- 0.9; PyTorch code: no published number (withdrawn README rows: 78.5 +- 0.9, 'ResNet-25' 78.1 +- 0.6).
# Official settings (spec mtl.md §5.2): from the pre-trained encoder (mini_imagenet_pretrain.sh), 100 epochs x 100 tasks of
# 5-way 5-shot 15-query; inner loop 100 steps of 0.01 (training and test); Adam 1e-4 (SS, BatchNorm) and 1e-3
# (base learner initialisation), StepLR 10 epochs x0.5; 600 validation tasks per epoch; test 600 tasks.
# Usage: DATA=/path/to/dataset bash scripts/mtl/mini_imagenet_5shot.sh [extra flags, e.g. --num_workers 8]
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:?set DATA to the dataset folder holding base.json, val.json, novel.json}
RUN=checkpoints/mini_imagenet/ResNet25_mtl_5way_5shot_metatrain
OFFICIAL=(--way 5 --shot 5 --base_lr 0.01 --update_step 100)
if [ ! -f "$RUN/best_model.pdparams" ]; then
  python meta_train.py --dataset mini_imagenet --data_path "$DATA" --model ResNet25 --method mtl --image_size 80 "${OFFICIAL[@]}" \
    --max_epoch 100 --num_batch 100 --train_query 15 --val_query 15 --meta_lr1 0.0001 --meta_lr2 0.001 \
    --step_size 10 --gamma 0.5 --val_n_episode 600 --gpu \
    --init_weights checkpoints/mini_imagenet/ResNet25_mtl_pretrain/best_model.pdparams "$@"
fi
python test.py --dataset mini_imagenet --data_path "$DATA" --model ResNet25 --method mtl --image_size 80 "${OFFICIAL[@]}" \
  --val_query 15 --test_n_episode 600 --gpu --eval_weights "$RUN/best_model.pdparams" "$@"
