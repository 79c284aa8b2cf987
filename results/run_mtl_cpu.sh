#!/usr/bin/env bash
# Real-data CPU run recorded in results/: Meta-Transfer Learning with its three phases on a
# dataset in the mini-ImageNet CSV layout, 5-way 1-shot and 5-shot tests. The baselines it is
# compared with (Conv-4 ProtoNet and FRN, about the same CPU time) come from run_conv4_cpu.sh:
#   DATA=... SIZE=40 EPOCHS=4 EPISODES=50 MILESTONE=3 OUT=results/runs/mtl_baselines bash results/run_conv4_cpu.sh
#
# The official MTL recipe (configs/mtl/) trains the full-width ResNet-25 (40.9M parameters,
# ~9 GMAC per 80x80 image) for 110 + 100 epochs on a GPU. On a shared 2-core CPU that is out of
# reach, so this run keeps the method and cuts the budget:
# - encoder widths 32-64-128 (stem 16) instead of 160-320-640, images SIZE x SIZE (40) instead
#   of 80 (the MTL pipeline scaled: Resize(46) [-> RandomResizedCrop(44)] -> CenterCrop(40));
# - pre-training PRE_EPOCHS epochs (batch 64, SGD Nesterov 0.1, wd 5e-4, LR x0.2 every PRE_STEP
#   epochs: none within 2), validated on 200 episodes with the official preval inner loop (100
#   steps of 0.01);
# - meta-training META_EPOCHS x META_TASKS tasks of 5-way 1-shot with 15 queries at the official
#   rates (Adam 1e-4 for SS/BN, 1e-3 for the base learner, 100 inner steps of 0.01), validated on
#   200 episodes; the best validation checkpoint is tested (600 episodes, seed 0);
# - ProtoNet and FRN (the command above): Conv-4 from scratch at the same image size, 4 x 50
#   episodes of 20-way 1-shot (Adam 1e-3, x0.1 for the last epoch): about as much CPU time as
#   MTL's two phases together (8.9-9.0 vs 8.7 CPU minutes here).
# Every command is timed (/usr/bin/time: wall and CPU seconds, in the log; the CPU is shared,
# so CPU seconds are the budget, not wall time).
#
# Usage: DATA=/path/to/miniimagenet84_fs100 bash results/run_mtl_cpu.sh 2>&1 | tee results/runs/mtl_cpu.log
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:?dataset folder in the mini-ImageNet CSV layout}
NAME=${NAME:-mini_imagenet}
SIZE=${SIZE:-40}
WIDTHS=${WIDTHS:-32,64,128}
PRE_EPOCHS=${PRE_EPOCHS:-2}
PRE_STEP=${PRE_STEP:-2}
META_EPOCHS=${META_EPOCHS:-1}
META_TASKS=${META_TASKS:-50}
OUT=${OUT:-results/runs/mtl_budget}
TIME=(/usr/bin/time -f "TIME %e s wall, %U s user, %S s sys")
COMMON=(--dataset "$NAME" --data_path "$DATA" --method mtl --image_size "$SIZE" --widths "$WIDTHS"
        --checkpoint_dir "$OUT" --num_workers 2)

python write_miniImagenet_filelist.py --data_path "$DATA"
"${TIME[@]}" python pretrain.py "${COMMON[@]}" --quiet --epoch "$PRE_EPOCHS" --batch_size 64 --lr 0.1 --step_size "$PRE_STEP" \
  --gamma 0.2 --val_n_episode 200 --save_freq 1
PRE="$OUT/$NAME/ResNet25_mtl_pretrain/best_model.pdparams"
"${TIME[@]}" python meta_train.py "${COMMON[@]}" --quiet --epoch "$META_EPOCHS" --train_n_episode "$META_TASKS" --n_shot 1 \
  --update_step 100 --val_n_episode 200 --save_freq 1 --pretrain_path "$PRE"
RUN="$OUT/$NAME/ResNet25_mtl_5way_1shot_metatrain"
for TEST_SHOT in 1 5; do
  echo "== mtl best_model 5-way $TEST_SHOT-shot"
  "${TIME[@]}" python test.py "${COMMON[@]}" --n_shot $TEST_SHOT --n_query 15 --update_step 100 --test_n_episode 600 \
    --seed 0 --model_path "$RUN/best_model.pdparams"
done

