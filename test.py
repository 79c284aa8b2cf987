"""Few-shot test: python test.py --method meta_frn --n_shot 1 --model_path P ... (flags: python test.py --help)."""
from frn import runs
from frn.args import parse, test_parser
from utils.errors import exit_on_user_error


@exit_on_user_error
def main(argv=None):
    runs.test(parse(test_parser(), argv))


if __name__ == "__main__":
    main()
