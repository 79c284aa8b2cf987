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


def test_validation_queries_have_their_own_flag():
    """--val_n_query sizes the validation episodes; without it they keep --n_query (the AI Studio FRN
    reproduction's commands), and the training episodes keep --n_query either way."""
    import numpy as np

    from frn.runs import val_episodes, validation_queries

    class Labels:
        labels = np.repeat(np.arange(6), 30)
    base = ["--method", "meta_frn", "--n_shot", "5", "--n_query", "15", "--val_n_episode", "3"]
    args = parse(meta_train_parser(), base)
    assert validation_queries(args) == 15
    assert {len(e) for e in val_episodes(args, Labels)} == {5 * (5 + 15)}
    args = parse(meta_train_parser(), base + ["--val_n_query", "16"])
    assert (args.n_query, validation_queries(args)) == (15, 16)
    assert {len(e) for e in val_episodes(args, Labels)} == {5 * (5 + 16)}
    with pytest.raises(UserError, match="--val_n_query"):
        parse(meta_train_parser(), base + ["--val_n_query", "0"])


def test_mtl_training_and_validation_queries_are_apart():
    """The official MTL has --train_query and --val_query; each sets its own episodes."""
    args = parse(meta_train_parser(), ["--method", "mtl", "--train_query", "15", "--val_query", "10"])
    assert (args.n_query, args.val_n_query) == (15, 10)
