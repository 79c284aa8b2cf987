#!/usr/bin/env bash
# Real-data CPU run of the whole SimTrans pipeline on a weak-shot benchmark with injected outliers.
#
# Benchmark (python -m data.weakshot inject): a labelled dataset in the mini-ImageNet CSV layout;
# novel classes = NOVEL_CLASSES (default: SimTrans's CUB novel classes, those present), the other
# val classes are "outside the split", the rest are base classes. Each novel class keeps TEST test
# images; OUTLIERS of its remaining (web) images are replaced by images of other novel classes and
# of the outside classes (half each); injected.json lists them.
#
# Pipeline, as the reference scripts but cut to a CPU budget (Conv-4 from scratch at SIZE px
# instead of an ImageNet ResNet-50 at 224 px, fewer epochs, larger batches; every step keeps its
# official loss, optimiser habits and model selection on the test accuracy):
#   0 naive classifier on the web images            pretrain.py --method simtrans_naive
#   1 SimNet (head 4, beta 0.1) from the step-0 model pretrain.py --method simtrans_simnet
#   2 similarity matrices + denoising ROC-AUC         test.py --method simtrans_simnet
#   3a weighted classifier (savg1), from scratch like 0 pretrain.py --method simtrans_main
#   3b 3a + alternating graph regularisation          pretrain.py --method simtrans_alternate
#   3b' control: the same continuation with alpha 0   (isolates the graph term from the extra epochs)
#   0' upper bound: step 0 on the web images minus the injected outliers (data.weakshot oracle)
#   eval each classifier's best (test-selected, as the reference) and last checkpoint with test.py
#   results/simtrans_denoising.py: ROC-AUC per outlier source, and a control without similarity transfer
#
# Usage: DATA=/path/to/cub50_bbox84 SPLITS=/path/to/fewshot_splits bash results/run_simtrans_cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:?dataset folder in the mini-ImageNet CSV layout}
SPLITS=${SPLITS:-}
NOVEL_CLASSES=${NOVEL_CLASSES:-${SPLITS:+$SPLITS/cub_simtrans/testclasses.txt}}
NAME=${NAME:-cub_cropped}              # run folder name under OUT
OUTLIERS=${OUTLIERS:-0.3}
TEST=${TEST:-20}                       # clean test images per novel class
BASE_TEST=${BASE_TEST:-10}             # test images per base class (SimNet's base-class F1)
SIZE=${SIZE:-84}
EPOCHS=${EPOCHS:-25}                   # steps 0 and 3a
SIMNET_EPOCHS=${SIMNET_EPOCHS:-15}
GRAPH_EPOCHS=${GRAPH_EPOCHS:-16}       # step 3b (and its control)
OUT=${OUT:-results/runs/simtrans}
WS="$OUT/weakshot_$(basename "$DATA")"
CKPT="$OUT/checkpoints"
COMMON=(--dataset "$NAME" --data_path "$WS" --model Conv4 --image_size "$SIZE" --num_workers 2
        --checkpoint_dir "$CKPT" --imagenet_pretrained 0)
RUNS="$CKPT/$NAME"
start=$(date +%s)

python -m data.weakshot inject --data_path "$DATA" --out_dir "$WS" --outlier_fraction "$OUTLIERS" \
  --test_per_class "$TEST" --base_test_per_class "$BASE_TEST" ${NOVEL_CLASSES:+--novel_classes "$NOVEL_CLASSES"}

# step 0: the webly-supervised baseline
python pretrain.py "${COMMON[@]}" --quiet --method simtrans_naive --lr 0.05 --batch_size 32 --num_epoch "$EPOCHS" \
  --lr_interval 10
# step 1: SimNet with the adversarial domain loss, its backbone from step 0
python pretrain.py "${COMMON[@]}" --quiet --method simtrans_simnet --head_type 4 --beta 0.1 --lr 0.01 --domain_lr 0.01 \
  --batch_size 30 --batch_class_num 6 --batch_class_num_B 2 --num_epoch "$SIMNET_EPOCHS" --lr_interval 8 \
  --f1_batches 4 --similarity_pretrained "$RUNS/Conv4_simtrans_naive/best_model.pdparams"
SIMNET="$RUNS/Conv4_simtrans_simnet_h4_b0.1"
# step 2: similarity matrices of the web images, sample weights, denoising ROC-AUC
python test.py "${COMMON[@]}" --method simtrans_simnet --f1_batches 4 --similarity_net "$SIMNET/best_model.pdparams" \
  --save_dir "$SIMNET/similarity"
# step 3a: sample-weighted classifier, same recipe as step 0
python pretrain.py "${COMMON[@]}" --quiet --method simtrans_main --weight_type savg1 --load_dir "$SIMNET/similarity" \
  --lr 0.05 --batch_size 32 --num_epoch "$EPOCHS" --lr_interval 10
# step 3b: continue 3a alternating weighted CE epochs and graph-regularised epochs; then alpha 0
for ALPHA in 0.1 0; do
  python pretrain.py "${COMMON[@]}" --quiet --method simtrans_alternate --alpha "$ALPHA" --load_dir "$SIMNET/similarity" \
    --similarity_net "$SIMNET/best_model.pdparams" --pretrain_path "$RUNS/Conv4_simtrans_main_savg1/best_model.pdparams" \
    --lr 0.0125 --cls 32 --gcn 64 --num_epoch "$GRAPH_EPOCHS" --lr_interval 8
done

# upper bound: the same step 0 on the web images without the injected outliers (perfect denoising)
python -m data.weakshot oracle --data_path "$WS" --out_dir "$WS-oracle"
python pretrain.py "${COMMON[@]}" --quiet --data_path "$WS-oracle" --method simtrans_naive --exp_name oracle \
  --lr 0.05 --batch_size 32 --num_epoch "$EPOCHS" --lr_interval 10

for RUN in Conv4_simtrans_naive Conv4_simtrans_main_savg1 Conv4_simtrans_alternate_GCN_a0.1_avg1 \
           Conv4_simtrans_alternate_GCN_a0_avg1; do
  for MODEL in best_model last_model; do
    echo "== $RUN $MODEL: $(python test.py "${COMMON[@]}" --method simtrans_naive \
      --model_path "$RUNS/$RUN/$MODEL.pdparams" | tail -1)"
  done
done
for MODEL in best_model last_model; do
  echo "== Conv4_simtrans_naive_oracle $MODEL: $(python test.py "${COMMON[@]}" --data_path "$WS-oracle" \
    --method simtrans_naive --model_path "$RUNS/Conv4_simtrans_naive_oracle/$MODEL.pdparams" | tail -1)"
done
# per run: the test accuracy per epoch, its best epoch (the reference's choice) and the mean of the last 5
python - "$RUNS" <<'PY'
import json, pathlib, sys
for run in sorted(pathlib.Path(sys.argv[1]).glob("Conv4_simtrans_*/history.json")):
    accs = [h["val_acc"] for h in json.loads(run.read_text())]
    best = max(range(len(accs)), key=accs.__getitem__)
    print(f"{run.parent.name}: {len(accs)} epochs, best {accs[best]:.2f} at epoch {best}, "
          f"mean of the last 5 {sum(accs[-5:]) / len(accs[-5:]):.2f}; per epoch {[round(a, 1) for a in accs]}")
PY
# the denoising per outlier source, and the same weights from the step-0 model's feature cosine (control)
python results/simtrans_denoising.py --data_path "$WS" --similarity "$SIMNET/similarity" \
  --naive "$RUNS/Conv4_simtrans_naive/best_model.pdparams" --model Conv4 --image_size "$SIZE" --dataset "$NAME"
echo "wall time $(( $(date +%s) - start )) s"
