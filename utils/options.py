"""Typed options: a method declares its flags once, as a dataclass, and everything else derives
from it — the command-line flags with their help text and defaults, the object the method's
constructor takes, and the defaults used where no command line exists (tests, the converter,
a checkpoint's own settings).

    @dataclass
    class DeepEMDOptions(MethodOptions):
        deepemd: str = option("fcn", "image representation", choices=VARIANTS, flags=("-deepemd", "--deepemd"))
        temperature: float = option(12.5, "logit temperature T")

`add_options(parser, DeepEMDOptions, stage)` adds `-deepemd/--deepemd` and `--temperature` to an
argparse parser; `options_from_args(DeepEMDOptions, args)` reads them back into a
`DeepEMDOptions`; `DeepEMDOptions(temperature=10)` is the same object built in code. A field
declared with `shared(...)` is not a flag of the method: it is filled from the entry point's
common flags (the backbone name, image size, ...).
"""
import argparse
import dataclasses
import typing
from typing import TYPE_CHECKING, Any, Dict, Iterator, Optional, Sequence, Tuple, Type, TypeVar

from utils.errors import UserError
from utils.flags import parser_flags

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")
_NO_DEFAULT = object()


def option(default: Any, help: str, *, flags: Sequence[str] = (), choices: Optional[Sequence[Any]] = None,
           stages: Optional[Sequence[str]] = None, nargs: Optional[str] = None) -> Any:
    """A method flag: its default, help text, option strings (default `--<field name>`),
    allowed values, and the entry points that offer it (default: all)."""
    return dataclasses.field(default=default, metadata={
        "help": help, "flags": tuple(flags), "choices": None if choices is None else tuple(choices),
        "stages": None if stages is None else tuple(stages), "nargs": nargs})


def shared(default: Any, help: str = "") -> Any:
    """A setting the method reads from the entry point's common flags (not a flag of its own)."""
    return dataclasses.field(default=default, metadata={"shared": True, "help": help})


def internal(default: Any, help: str = "") -> Any:
    """A setting that is no flag at all: filled by the workflow (e.g. a dataset fingerprint)."""
    return dataclasses.field(default=default, metadata={"internal": True, "help": help})


def method_fields(cls: type) -> Iterator[dataclasses.Field]:
    """The fields of an options class that are command-line flags of the method."""
    for f in dataclasses.fields(cls):
        if not f.metadata.get("shared") and not f.metadata.get("internal"):
            yield f


def _scalar_type(annotation: Any) -> Optional[type]:
    """int/float/str/bool of an annotation, looking through Optional[...]."""
    if annotation in (int, float, str, bool):
        return annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Union and len(args) == 1:
        return _scalar_type(args[0])
    if typing.get_origin(annotation) in (tuple, list, Tuple) and args:
        return _scalar_type(args[0])
    return None


def _parse_bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false or 1/0, got {text!r}")


def _describe(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(map(str, value)) or "none"
    return "none" if value is None else str(value)


def add_options(parser: argparse.ArgumentParser, cls: type, stage: Optional[str] = None) -> None:
    """Add every method flag of the options class `cls` offered at `stage` to `parser`, under
    an argument group named after the class, with its default shown in the help."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(f"{cls.__name__.replace('Options', '')} options")
    taken = set(parser_flags(parser))
    for f in method_fields(cls):
        stages = f.metadata.get("stages")
        if stage is not None and stages is not None and stage not in stages:
            continue
        flags = [s for s in (f.metadata.get("flags") or (f"--{f.name}",)) if s not in taken]
        if not flags:
            continue
        default = _field_default(f)
        kind = _scalar_type(hints[f.name])
        help_text = f"{f.metadata.get('help', '')} (default: {_describe(default)})".replace("%", "%%")
        kwargs: Dict[str, Any] = {"dest": f.name, "default": default, "help": help_text}
        if kind is bool:
            kwargs["type"] = _parse_bool
            kwargs["metavar"] = "{0,1}"
        elif kind is not None:
            kwargs["type"] = kind
        if f.metadata.get("choices") is not None:
            kwargs["choices"] = list(f.metadata["choices"])
        if f.metadata.get("nargs"):
            kwargs["nargs"] = f.metadata["nargs"]
        group.add_argument(*flags, **kwargs)


def _field_default(f: dataclasses.Field) -> Any:
    """A field's default value (a fresh one from its factory when it has one)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"option {f.name} has no default")


def options_from_args(cls: Type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """The options object of parsed `args`: method flags and shared settings by field name
    (a field `args` lacks keeps its declared default), then `overrides`."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    values.update(overrides)
    return cls(**values)


def replace(options: T, **changes: Any) -> T:
    """A copy of `options` with some fields changed."""
    return dataclasses.replace(options, **changes)


def check_positive(options: Any, *names: str) -> None:
    """One-line error for the first of the named integer options that is below 1 (None passes)."""
    for name in names:
        value = getattr(options, name)
        if value is not None and value < 1:
            raise UserError(f"--{name} must be at least 1 (got {value})")
