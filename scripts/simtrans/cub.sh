#!/usr/bin/env bash
# SimTrans on CUB-200-2011 (150 base / 50 novel species, web images CUB_web/):
# the four steps of the official _scripts/CUB/ (the reference runs the same commands on every dataset,
# changing --data_path), with its values: ImageNet-pretrained ResNet-50 at 224 x 224, SGD momentum 0.9
# re-created every epoch, weight decay 1e-4, lr halved every --lr_interval epochs, model selection and
# early stop (10 falling epochs) on the novel test accuracy, as the reference does.
#   0 naive/train.py                   -> pretrain.py --method simtrans_naive
#   1 train_GAN_similarity.py          -> pretrain.py --method simtrans_simnet
#   2 GAN_noise_detection.py           -> test.py --method simtrans_simnet (writes the similarity folder)
#   3 train_main.py, alternate_with_GCN.py -> pretrain.py --method simtrans_main / simtrans_alternate
#   eval_model.py                      -> test.py
# BETA (below): 0 in 1_simnet.sh, 0.1 for the released SimNet (h4f2_b0.1). WS: the weak-shot folder.
# The reference's --resume (the model step 3b starts from) is --pretrain_path here. The repository
# publishes no result table; the released CUB checkpoints are named naive 84.5, SimNet 86.5 (novel pair
# F1), main 90.7 (file names, not reported results).
# Usage: DATA=/path/to/raw/dataset SPLITS=/path/to/fewshot_splits bash scripts/simtrans/cub.sh [--gpu]
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:?the dataset folder of the official package}
SPLITS=${SPLITS:?folder of fewshot_splits (cub_simtrans/trainvalclasses.txt, testclasses.txt)}
WS=${WS:-$DATA/weakshot}
CKPT=${CKPT:-./checkpoints}
BETA=0
COMMON=(--dataset cub --data_path "$WS" --model ResNet50 --image_size 224 --imagenet_pretrained 1 --checkpoint_dir "$CKPT" --num_workers 8 "$@")
RUNS="$CKPT/cub"

python -m data.weakshot cub --data_path "$DATA" --split_dir "$SPLITS" --out_dir "$WS"
python pretrain.py "${COMMON[@]}" --method simtrans_naive --lr 1e-4 --batch_size 64 --num_epoch 30
python pretrain.py "${COMMON[@]}" --method simtrans_simnet --beta "$BETA" --lr 5e-3 --domain_lr 5e-3 --batch_size 50 \
  --lr_interval 25 --num_epoch 50 --head_type 4 --batch_class_num_B 2 \
  --similarity_pretrained "$RUNS/ResNet50_simtrans_naive/best_model.pdparams"
SIMNET="$RUNS/ResNet50_simtrans_simnet_h4_b$BETA"
python test.py "${COMMON[@]}" --method simtrans_simnet --similarity_net "$SIMNET/best_model.pdparams" \
  --save_dir "$SIMNET/similarity"
python pretrain.py "${COMMON[@]}" --method simtrans_main --lr 1e-4 --batch_size 8 --num_epoch 60 \
  --load_dir "$SIMNET/similarity"
python pretrain.py "${COMMON[@]}" --method simtrans_alternate --lr 1e-4 --batch_size 8 --num_epoch 100 \
  --load_dir "$SIMNET/similarity" --similarity_net "$SIMNET/best_model.pdparams" \
  --pretrain_path "$RUNS/ResNet50_simtrans_main_savg1/best_model.pdparams"
python test.py "${COMMON[@]}" --method simtrans_alternate \
  --model_path "$RUNS/ResNet50_simtrans_alternate_GCN_a0.1_avg1/best_model.pdparams"
