"""Whole-class (pre-)training: python pretrain.py --method stl_frn --data_path DIR ...
(flags: python pretrain.py --help)."""
from frn import runs
from frn.args import parse, pretrain_parser
from utils.errors import exit_on_user_error


@exit_on_user_error
def main(argv=None):
    runs.pretrain(parse(pretrain_parser(), argv))


if __name__ == "__main__":
    main()
