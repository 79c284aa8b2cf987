"""Episodic meta-training: python meta_train.py --method meta_frn --train_n_way 20 --n_shot 5 --pretrain_path P ...
(flags: python meta_train.py --help)."""
from frn import runs
from frn.args import meta_train_parser, parse
from utils.errors import exit_on_user_error


@exit_on_user_error
def main(argv=None):
    runs.meta_train(parse(meta_train_parser(), argv))


if __name__ == "__main__":
    main()
