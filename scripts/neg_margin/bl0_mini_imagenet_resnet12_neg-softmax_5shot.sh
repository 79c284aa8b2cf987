#!/usr/bin/env bash
# Negative-Margin, protocol bl0 (the official code, script/resnet12/miniImagenet_neg-softmax_5-shot.sh): mini-ImageNet, ResNet-12 (84x84),
# neg-softmax head (scale 10, margin -0.1), base training for the 5-shot table.
# No published number for this row (the paper's ResNet-12 table is not in the bl0 README).
# Settings (spec neg_margin.md §4.1, §5.1): Adam lr 3e-3, weight decay 1e-5, batch 256, 400 epochs, linear warm-up over
# 100 epochs from lr/16, then cosine to 1e-6, stepped per iteration after the optimiser (one-step lag); dropout/DropBlock 0.1, block 5;
# a 64-row head; validation every 20 epochs on 100 5-way 5-shot episodes (16 queries). Meta-test: a fresh neg-softmax classifier
# (scale 5, margin 0) fitted for 100 epochs over the support set (batches of 4, dampened SGD); 600 episodes, 16 queries,
# 1- and 5-shot, best and last checkpoints, as main.py does.
# Filelists: python write_miniImagenet_filelist.py --data_path DATA (bl0 reads the full-resolution ImageNet JPEGs of these classes).
# Usage: DATA=/path/to/dataset bash scripts/neg_margin/bl0_mini_imagenet_resnet12_neg-softmax_5shot.sh [extra flags, e.g. --num_workers 8]
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:?set DATA to the dataset folder holding base.json, val.json, novel.json}
CKPT=checkpoints/bl0/bl0_mini_imagenet_resnet12_neg-softmax_5shot
HEAD="--protocol bl0 --metric neg-softmax --scale_factor 10 --margin -0.1"
python pretrain.py --dataset mini_imagenet --data_path "$DATA" --model ResNet12 --image_size 84 --method neg_margin $HEAD \
  --num_classes 64 --batch_size 256 --optimizer adam --lr 3e-3 --wd 1e-5 --epoch 400 --lr_schedule cosine \
  --warmup_epochs 100 --warmup_start 0.0625 --eta_min 1e-6 --lr_lag 1 --drop_rate 0.1 --dropblock_size 5 --val_n_way 5 --n_shot 5 \
  --n_query 16 --val_n_episode 100 --val_freq 20 --seed 0 --checkpoint_dir "$CKPT" --gpu "$@"
RUN=checkpoints/bl0/bl0_mini_imagenet_resnet12_neg-softmax_5shot/mini_imagenet/ResNet12_neg_margin_bl0_neg-softmax_m-0.1_pretrain
for MODEL in best_model last_model; do
  for SHOT in 1 5; do
    python test.py --dataset mini_imagenet --data_path "$DATA" --model ResNet12 --image_size 84 --method neg_margin $HEAD \
      --n_shot $SHOT --n_query 16 --test_n_way 5 --test_n_episode 600 --seed 0 --gpu --model_path "$RUN/$MODEL.pdparams" "$@"
  done
done
