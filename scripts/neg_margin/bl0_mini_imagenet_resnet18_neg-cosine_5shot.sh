#!/usr/bin/env bash
# Negative-Margin, protocol bl0 (the official code, script/resnet18/miniImagenet_neg-cosine_5-shot.sh): mini-ImageNet, ResNet-18 (224x224),
# cosineface head (scale 30, margin -0.02), base training for the 5-shot table.
# Reported: 80.94 ± 0.59 (5-shot, bl0 README, Neg-Cosine).
# Settings (spec neg_margin.md §4.1, §5.1): Adam lr 3e-3, weight decay 1e-4, batch 256, 400 epochs, linear warm-up over
# 100 epochs from lr/16, then cosine to 1e-6, stepped per iteration after the optimiser (one-step lag); dropout/DropBlock 0.2, block 3;
# a 64-row head; validation every 20 epochs on 100 5-way 5-shot episodes (16 queries). Meta-test: a fresh cosineface classifier
# (scale 5, margin 0) fitted for 100 epochs over the support set (batches of 4, dampened SGD); 600 episodes, 16 queries,
# 1- and 5-shot, best and last checkpoints, as main.py does.
# Filelists: python write_miniImagenet_filelist.py --data_path DATA (bl0 reads the full-resolution ImageNet JPEGs of these classes).
# Usage: DATA=/path/to/dataset bash scripts/neg_margin/bl0_mini_imagenet_resnet18_neg-cosine_5shot.sh [extra flags, e.g. --num_workers 8]
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:?set DATA to the dataset folder holding base.json, val.json, novel.json}
CKPT=checkpoints/bl0/bl0_mini_imagenet_resnet18_neg-cosine_5shot
HEAD="--protocol bl0 --metric cosineface --scale_factor 30 --margin -0.02"
python pretrain.py --dataset mini_imagenet --data_path "$DATA" --model ResNet18 --image_size 224 --method neg_margin $HEAD \
  --num_classes 64 --batch_size 256 --optimizer adam --lr 3e-3 --wd 1e-4 --epoch 400 --lr_schedule cosine \
  --warmup_epochs 100 --warmup_start 0.0625 --eta_min 1e-6 --lr_lag 1 --drop_rate 0.2 --dropblock_size 3 --val_n_way 5 --n_shot 5 \
  --n_query 16 --val_n_episode 100 --val_freq 20 --seed 0 --checkpoint_dir "$CKPT" --gpu "$@"
RUN=checkpoints/bl0/bl0_mini_imagenet_resnet18_neg-cosine_5shot/mini_imagenet/ResNet18_neg_margin_bl0_cosineface_m-0.02_pretrain
for MODEL in best_model last_model; do
  for SHOT in 1 5; do
    python test.py --dataset mini_imagenet --data_path "$DATA" --model ResNet18 --image_size 224 --method neg_margin $HEAD \
      --n_shot $SHOT --n_query 16 --test_n_way 5 --test_n_episode 600 --seed 0 --gpu --model_path "$RUN/$MODEL.pdparams" "$@"
  done
done
