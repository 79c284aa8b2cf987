#!/usr/bin/env bash
# Real-data CPU runs recorded in results/README.md ("Negative-Margin vs margin 0, ProtoNet and FRN"):
# Conv-4, SIZE x SIZE images, the same training budget (images seen) for four models, then 5-way
# 1-shot and 5-shot tests on the same 2,000 seeded episodes (15 queries per class, seed 0).
#
#   neg_margin, margin MARGIN and margin 0: pretrain.py, mmfewshot's recipe cut to EPOCHS epochs
#     (cosine head, temperature 10; SGD lr 0.05, momentum 0.9, wd 1e-4, batch 64; linear warm-up
#     from 0.25 over WARMUP iterations; LR x0.1 at epoch MILESTONE); meta-test: mmfewshot's
#     fitting (150 / 600 dampened-SGD steps on the support features).
#   protonet and meta_frn: meta_train.py from scratch, the recipe of results/run_conv4_cpu.sh
#     (20-way 1-shot episodes, 10 queries, Adam 1e-3, wd 5e-4, LR x0.1 at META_MILESTONE), with
#     META_EPOCHS x EPISODES episodes of 220 images = the neg_margin runs' EPOCHS x base images.
# All four: validation after every epoch on the same 100 fixed 5-way 1-shot episodes (10 queries),
# the best checkpoint is tested (mmfewshot's meta-val selection).
#
# Usage (the recorded runs):
#   DATA=.../miniimagenet84_fs100 NAME=mini_imagenet EPOCHS=4 WARMUP=20 MILESTONE=3 \
#     META_EPOCHS=4 EPISODES=29 META_MILESTONE=3 nice -n 10 bash results/run_neg_margin_cpu.sh
#   DATA=.../cub50_square84 NAME=cub EPOCHS=6 WARMUP=10 MILESTONE=5 \
#     META_EPOCHS=3 EPISODES=12 META_MILESTONE=2 nice -n 10 bash results/run_neg_margin_cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:?dataset folder in the mini-ImageNet CSV layout}
NAME=${NAME:-mini_imagenet}
SIZE=${SIZE:-42}
MARGIN=${MARGIN:--0.02}
EPOCHS=${EPOCHS:-4}
WARMUP=${WARMUP:-20}
MILESTONE=${MILESTONE:-3}
META_EPOCHS=${META_EPOCHS:-4}
EPISODES=${EPISODES:-29}
META_MILESTONE=${META_MILESTONE:-3}
EPISODES_TEST=${EPISODES_TEST:-2000}
OUT=${OUT:-results/runs}
COMMON="--dataset $NAME --data_path $DATA --model Conv4 --image_size $SIZE --num_workers 2 --checkpoint_dir $OUT"
VAL="--val_n_way 5 --n_shot 1 --n_query 10 --val_n_episode 100 --val_freq 1 --quiet"
python write_miniImagenet_filelist.py --data_path "$DATA"

timed() {  # run a command, then print its wall time
  local start=$SECONDS
  "$@"
  echo "== wall $((SECONDS - start)) s: ${*:1:4} ..."
}

for M in "$MARGIN" 0; do
  timed python pretrain.py $COMMON --method neg_margin --margin "$M" --batch_size 64 --epoch "$EPOCHS" \
    --optimizer sgd --lr 0.05 --wd 1e-4 --no_nesterov --warmup_iters "$WARMUP" --warmup_start 0.25 \
    --milestones "$MILESTONE" --gamma 0.1 $VAL
done
for METHOD in protonet meta_frn; do
  timed python meta_train.py $COMMON --method $METHOD --train_n_way 20 --train_n_episode "$EPISODES" \
    --epoch "$META_EPOCHS" --optimizer adam --lr 1e-3 --gamma 0.1 --milestones "$META_MILESTONE" --wd 5e-4 $VAL
done

RUNS=("neg_margin Conv4_neg_margin_mmfs_cosineface_m${MARGIN}_pretrain"
      "neg_margin Conv4_neg_margin_mmfs_cosineface_m0_pretrain"
      "protonet Conv4_protonet_20way_1shot_metatrain"
      "meta_frn Conv4_meta_frn_20way_1shot_metatrain")
for RUN in "${RUNS[@]}"; do
  read -r METHOD FOLDER <<< "$RUN"
  for SHOT in 1 5; do
    echo "== $FOLDER 5-way $SHOT-shot"
    timed python test.py $COMMON --method "$METHOD" --n_shot "$SHOT" --n_query 15 --test_n_way 5 \
      --test_n_episode "$EPISODES_TEST" --seed 0 --model_path "$OUT/$NAME/$FOLDER/best_model.pdparams"
  done
done
