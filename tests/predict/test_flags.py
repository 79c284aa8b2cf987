"""predict.py and export.py offer every method's test-time flags (as test.py does), with the
defaults test.py uses, so a checkpoint is rebuilt exactly as it was tested."""
import contextlib
import dataclasses
import io

import pytest

from frn.args import export_parser, parse, predict_parser, test_parser
from methods import METHODS
from tests.predict.helpers import FEW_SHOT, model_flags
from utils.options import method_fields


@pytest.mark.parametrize("parser", [predict_parser, export_parser])
@pytest.mark.parametrize("method", FEW_SHOT)
def test_help_lists_the_test_time_flags_of_the_method(parser, method):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        parse(parser(), ["--method", method, "--help", *([] if parser is predict_parser else ["--out_dir", "x"])])
    assert stop.value.code == 0
    for f in method_fields(METHODS[method].Options):
        stages = f.metadata.get("stages")
        if stages is None or "test" in stages:
            flag = (f.metadata.get("flags") or (f"--{f.name}",))[-1]
            assert flag in out.getvalue(), f"{method}: {flag}"


@pytest.mark.parametrize("method", FEW_SHOT)
def test_the_method_is_built_with_test_py_s_options(method):
    flags = model_flags(method)
    tested = dataclasses.asdict(parse(test_parser(), flags).options)
    predicted = dataclasses.asdict(parse(predict_parser(), flags).options)
    assert predicted == tested
