"""The entry points' flags: `--help` lists every method's own flags, typed options carry one
source of defaults, and aliases keep the official spellings."""
import contextlib
import dataclasses
import io

import pytest

from frn.args import meta_train_parser, parse, pretrain_parser, test_parser
from methods import METHODS, options_for
from utils.errors import UserError
from utils.options import method_fields

PARSERS = {"pretrain": pretrain_parser, "meta_train": meta_train_parser, "test": test_parser}


def help_text(stage: str, method: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        parse(PARSERS[stage](), ["--method", method, "--help"])
    assert exit_info.value.code == 0
    return out.getvalue()


@pytest.mark.parametrize("stage", sorted(PARSERS))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_help_lists_every_flag_of_the_method(stage, method):
    text = help_text(stage, method)
    options = METHODS[method].Options
    offered = [f for f in method_fields(options) if f.metadata.get("stages") in (None,) or
               stage in f.metadata["stages"]]
    for f in offered:
        flag = (f.metadata.get("flags") or (f"--{f.name}",))[-1]
        assert flag in text, f"{stage} --method {method} --help does not list {flag}"
    if offered:
        assert f"{options.__name__.replace('Options', '')} options" in text


@pytest.mark.parametrize("method", sorted(METHODS))
def test_declared_defaults_are_the_parsed_defaults(method):
    """One source of truth: the options built in code equal those parsed from an empty command
    line, field by field (shared settings aside)."""
    stage = "test"
    parsed = parse(PARSERS[stage](), ["--method", method]).options
    built = options_for(method, **{f.name: getattr(parsed, f.name) for f in dataclasses.fields(parsed)
                                   if (f.metadata.get("shared") or f.metadata.get("internal")) and f.name != "method"})
    assert parsed == built


def test_option_values_are_checked_in_one_line():
    with pytest.raises(UserError, match="-sfc_bs"):
        parse(test_parser(), ["--method", "deepemd", "-sfc_bs", "0"])
    with pytest.raises(SystemExit):  # argparse: a choice that does not exist
        with contextlib.redirect_stderr(io.StringIO()):
            parse(test_parser(), ["--method", "deepemd", "-solver", "simplex"])


def test_aliases_keep_the_official_spellings_and_their_choices():
    args = parse(pretrain_parser(), ["--method", "simtrans_naive", "--backbone", "resnet50", "--optim", "adam",
                                     "--num_epoch", "3"])
    assert (args.model, args.optimizer, args.epoch) == ("ResNet50", "adam", 3)
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        parse(pretrain_parser(), ["--method", "simtrans_naive", "--optim", "rmsprop"])
