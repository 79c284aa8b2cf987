#!/usr/bin/env bash
# Negative-Margin, protocol bl0 (the official code, script/resnet18/CUB_neg-softmax_1-shot.sh): CUB, ResNet-18 (224x224),
# neg-softmax head (scale 5, margin -0.05), base training for the 1-shot table.
# Reported: 71.48 ± 0.83 (1-shot, bl0 README, Neg-Softmax).
# Settings (spec neg_margin.md §4.1, §5.1): Adam lr 3e-3, weight decay 5e-3, batch 256, 200 epochs, linear warm-up over
# 50 epochs from lr/16, then cosine to 1e-6, stepped per iteration after the optimiser (one-step lag);
# a 200-row head; validation every 20 epochs on 100 5-way 5-shot episodes (16 queries). Meta-test: a fresh neg-softmax classifier
# (scale 5, margin 0) fitted for 100 epochs over the support set (batches of 4, dampened SGD); 600 episodes, 16 queries,
# 1- and 5-shot, best and last checkpoints, as main.py does.
# Filelists: python write_miniImagenet_filelist.py --dataset cub --split frn --data_path DATA (bl0's class rule; labels 0..99: the 200-row head keeps bl0's width, its unused rows as in bl0).
# Usage: DATA=/path/to/dataset bash scripts/neg_margin/bl0_cub_resnet18_neg-softmax_1shot.sh [extra flags, e.g. --num_workers 8]
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:?set DATA to the dataset folder holding base.json, val.json, novel.json}
CKPT=checkpoints/bl0/bl0_cub_resnet18_neg-softmax_1shot
HEAD="--protocol bl0 --metric neg-softmax --scale_factor 5 --margin -0.05"
python pretrain.py --dataset cub --data_path "$DATA" --model ResNet18 --image_size 224 --method neg_margin $HEAD \
  --num_classes 200 --batch_size 256 --optimizer adam --lr 3e-3 --wd 5e-3 --epoch 200 --lr_schedule cosine \
  --warmup_epochs 50 --warmup_start 0.0625 --eta_min 1e-6 --lr_lag 1 --val_n_way 5 --n_shot 5 \
  --n_query 16 --val_n_episode 100 --val_freq 20 --seed 0 --checkpoint_dir "$CKPT" --gpu "$@"
RUN=checkpoints/bl0/bl0_cub_resnet18_neg-softmax_1shot/cub/ResNet18_neg_margin_bl0_neg-softmax_m-0.05_pretrain
for MODEL in best_model last_model; do
  for SHOT in 1 5; do
    python test.py --dataset cub --data_path "$DATA" --model ResNet18 --image_size 224 --method neg_margin $HEAD \
      --n_shot $SHOT --n_query 16 --test_n_way 5 --test_n_episode 600 --seed 0 --gpu --model_path "$RUN/$MODEL.pdparams" "$@"
  done
done
