"""Flag helpers shared by the argument parsers and the methods' own flags (no method imports
here, so methods can use them without an import cycle)."""
import argparse
from typing import Any, Dict, Mapping, Sequence, Tuple

from utils.errors import UserError


def int_list(text: str, flag: str) -> Tuple[int, ...]:
    """Parse a comma-separated list of positive integers such as "2,3" (empty -> ())."""
    try:
        values = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        values = (0,)
    if any(v < 1 for v in values):
        raise UserError(f"{flag} {text!r} is not a comma-separated list of positive integers, e.g. 2,3")
    return values


class _SetAll(argparse.Action):
    """An alias that sets several destinations at once (e.g. DeepEMD's -way)."""

    def __init__(self, option_strings, dest, targets: Sequence[str] = (), **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.targets = targets

    def __call__(self, parser, namespace, values, option_string=None):
        for target in self.targets:
            setattr(namespace, target, values)


def parser_flags(parser: argparse.ArgumentParser) -> Dict[str, argparse.Action]:
    """{option string: action} of every flag the parser has. (argparse has no public view of
    its flags; this is the one place that reads its table.)"""
    return dict(parser._option_string_actions)  # noqa: SLF001


def parser_destinations(parser: argparse.ArgumentParser) -> Dict[str, argparse.Action]:
    """{destination: action} of every argument the parser has (see `parser_flags`)."""
    return {action.dest: action for action in parser._actions}  # noqa: SLF001


def add_aliases(parser: argparse.ArgumentParser, aliases: Mapping[str, Sequence[str]]) -> None:
    """Accept another spelling for flags the parser already has (an official codebase's names):
    `aliases` maps the new option to the destinations it sets; destinations the parser lacks are
    skipped, and an alias with none left is not added."""
    actions = parser_destinations(parser)
    for option, dests in aliases.items():
        present = [d for d in dests if d in actions]
        if not present or option in parser_flags(parser):
            continue
        first = actions[present[0]]
        kind = first.type if first.choices is None else _one_of(list(first.choices), first.type)
        typed: Dict[str, Any] = {} if kind is None else {"type": kind}  # argparse's own default when the flag has none
        parser.add_argument(option, action=_SetAll, targets=present, dest=f"_alias{option}", **typed,
                            nargs=first.nargs, default=argparse.SUPPRESS, help=f"same as --{present[0]}")


def _one_of(choices: Sequence, kind=None):
    """An argparse type for an alias of a flag with choices: the choice equal to the value,
    ignoring case (official spellings such as --backbone resnet50), else an error naming them."""
    def parse(text: str):
        value = kind(text) if kind is not None else text
        for choice in choices:
            if choice == value or str(choice).lower() == str(value).lower():
                return choice
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(map(str, choices))}")
    return parse
