"""Classify your own images: python predict.py --method meta_frn --model ResNet12 --model_path best_model.pdparams
--support my_support/ --query my_photos/ --out predictions.csv (flags: python predict.py --help; docs/predict.md)."""
from frn import predict
from frn.args import parse, predict_parser
from utils.errors import exit_on_user_error


@exit_on_user_error
def main(argv=None):
    predict.predict(parse(predict_parser(), argv))


if __name__ == "__main__":
    main()
