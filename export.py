"""Export a static model for Paddle Inference: python export.py --method meta_frn --model ResNet12 --model_path
best_model.pdparams --support my_support/ --out_dir exported/ (flags: python export.py --help; docs/predict.md)."""
import os

# Paddle's C++ logs (a warning about "out" tensors while converting, executor notices) would bury
# the one-line summary and errors; GLOG_minloglevel=0 in the environment brings them back
os.environ.setdefault("GLOG_minloglevel", "2")

from frn import export  # noqa: E402  (after the logging setting, which Paddle reads on import)
from frn.args import export_parser, parse  # noqa: E402
from utils.errors import exit_on_user_error  # noqa: E402


@exit_on_user_error
def main(argv=None):
    export.export(parse(export_parser(), argv))


if __name__ == "__main__":
    main()
