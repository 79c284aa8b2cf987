#!/usr/bin/env bash
# Real-data CPU run recorded in results/: Conv-4 DeepEMD-FCN vs Conv-4 ProtoNet with the same
# budget, on a dataset in the mini-ImageNet CSV layout, then 5-way 1-shot and 5-shot tests.
#
# DeepEMD needs the 5x5 map of 84x84 inputs (25 nodes per image), so unlike run_conv4_cpu.sh the
# images keep their full size and the episodes are the official 5-way 1-shot with 15 queries
# (80 images each). Both methods: from scratch, EPOCHS x EPISODES episodes, SGD Nesterov
# (DeepEMD's optimiser) at LR with weight decay 5e-4, LR x0.5 every STEP epochs (its StepLR
# shape); validation 300 episodes per epoch; the best validation checkpoint is tested on 600
# episodes (seed 0, the same episodes for both), 5-shot with DeepEMD's SFC at eval.py defaults.
#
# Usage: DATA=/path/to/miniimagenet84_fs100 bash results/run_deepemd_cpu.sh
# (TRAIN_ONLY=1 stops after training; a rerun skips the training that is done, RETRAIN=1 redoes it)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:?dataset folder in the mini-ImageNet CSV layout}
NAME=${NAME:-mini_imagenet}
EPOCHS=${EPOCHS:-6}
EPISODES=${EPISODES:-50}
LR=${LR:-0.01}
STEP=${STEP:-2}
OUT=${OUT:-results/runs}
SOLVER_FLAGS=${SOLVER_FLAGS:-}          # e.g. "-eval_solver opencv"
python write_miniImagenet_filelist.py --data_path "$DATA"
run_folder() {  # the run folder meta_train.py writes for method $1
  if [ "$1" = deepemd ]; then echo "$OUT/$NAME/Conv4_deepemd_fcn_5way_1shot_metatrain"
  else echo "$OUT/$NAME/Conv4_$1_5way_1shot_metatrain"; fi
}
method_flags() { [ "$1" = deepemd ] && echo "-deepemd fcn $SOLVER_FLAGS" || true; }
for METHOD in deepemd protonet; do
  if [ ! -f "$(run_folder $METHOD)/last_model.pdparams" ] || [ -n "${RETRAIN:-}" ]; then  # a rerun only re-tests
    python meta_train.py --dataset "$NAME" --data_path "$DATA" --model Conv4 --method $METHOD $(method_flags $METHOD) \
      --train_n_way 5 --n_shot 1 --n_query 15 --train_n_episode "$EPISODES" --epoch "$EPOCHS" \
      --optimizer sgd --lr "$LR" --step_size "$STEP" --gamma 0.5 --wd 5e-4 --val_n_way 5 --val_n_episode 300 \
      --save_freq 1 --checkpoint_dir "$OUT" --num_workers 2 --quiet
  fi
done
[ -n "${TRAIN_ONLY:-}" ] && exit 0
for METHOD in deepemd protonet; do
  for TEST_SHOT in 1 5; do
    echo "== $METHOD best_model 5-way $TEST_SHOT-shot"
    python test.py --dataset "$NAME" --data_path "$DATA" --model Conv4 --method $METHOD $(method_flags $METHOD) \
      --n_shot $TEST_SHOT --n_query 15 --test_n_way 5 --test_n_episode 600 --seed 0 \
      --model_path "$(run_folder $METHOD)/best_model.pdparams"
  done
done
