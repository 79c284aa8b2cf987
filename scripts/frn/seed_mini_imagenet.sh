#!/usr/bin/env bash
# The seed README's own commands (AI Studio Paddle FRN reproduction): its defaults differ from
# the official code (pre-training batch 512; 600 test episodes of 15 queries instead of 10,000
# of 16). For the official protocol use mini_imagenet_resnet12.sh.
# Usage: DATA=/home/aistudio/data/mini-imagenet-sxc bash scripts/frn/seed_mini_imagenet.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-/home/aistudio/data/mini-imagenet-sxc}
python pretrain.py --dataset mini_imagenet --data_path "$DATA" --method stl_frn --lr 1e-1 --gamma 1e-1 \
  --epoch 350 --milestones 200 300 --batch_size 512 --val_n_episode 600 --image_size 84 --model ResNet12 \
  --n_shot 1 --n_query 15 --gpu
python meta_train.py --dataset mini_imagenet --data_path "$DATA" --method meta_frn --lr 1e-3 --gamma 1e-1 \
  --epoch 150 --train_n_episode 1000 --val_n_episode 600 --milestones 70 120 --image_size 84 --model ResNet12 \
  --train_n_way 20 --val_n_way 5 --n_shot 5 --n_query 15 --gpu \
  --pretrain_path ./checkpoints/mini_imagenet/ResNet12_stl_frn_pretrain/best_model.pdparams
for SHOT in 1 5; do
  python test.py --dataset mini_imagenet --data_path "$DATA" --model ResNet12 --method meta_frn --image_size 84 \
    --gpu --n_shot $SHOT --model_path ./checkpoints/mini_imagenet/ResNet12_meta_frn_20way_5shot_metatrain/best_model.pdparams \
    --test_task_nums 1 --test_n_episode 600
done
