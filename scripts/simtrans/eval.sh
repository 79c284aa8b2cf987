#!/usr/bin/env bash
# SimTrans evaluation (the official _scripts/<dataset>/eval.sh, GCN_reg/eval_model.py): top-1 accuracy of a
# classifier on the clean novel test images of a weak-shot folder. MODEL_PATH: a best_model.pdparams of
# step 0 or 3, or a released classifier converted with
#   python -m frn.convert --model ResNet50 --method simtrans_main final_classifier_state.pth final.pdparams
# (the released files are pickled whole modules: extract their state_dict in the reference repository first,
# see README "SimTrans").
# Usage: WS=/path/to/weakshot_folder MODEL_PATH=final.pdparams bash scripts/simtrans/eval.sh [--dataset cars] [--gpu]
set -euo pipefail
cd "$(dirname "$0")/../.."
WS=${WS:?a weak-shot folder (python -m data.weakshot)}
MODEL_PATH=${MODEL_PATH:?a SimTrans classifier .pdparams}
python test.py --dataset cub --data_path "$WS" --model ResNet50 --image_size 224 --method simtrans_main \
  --model_path "$MODEL_PATH" "$@"
