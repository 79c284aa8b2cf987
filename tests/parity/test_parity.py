"""Parity with the official implementations, driven by the fixture manifests.

One test case per manifest entry (its id `<method>/<file name>`: `-k deepemd` selects a folder),
dispatched on the entry's `kind` to the checkers of `tests/parity/<method>_checks.py`. A folder
that is absent (a user's clone without ../shared) skips; an entry whose kind no checker claims
fails; so does an entry whose outputs a checker left uncompared. Fixture folders of the
methods listed in `PARITY_METHODS` are tested.

An entry whose only mismatches were diagnosed by its checker as the reference's own imprecision
(`Entry.noise_issues`: float32 noise deciding a sign, an iterative solver stopped short of its
optimum; the tolerance is not changed) is reported as xfail with the diagnosis, after every
other array of the entry was compared. Set FSL_PARITY_STRICT=1 to
make those fail too.
"""
import importlib
import os

import pytest

from tests.conftest import FIXTURES
from tests.parity.checkers import CHECKERS, Entry, manifest_specs

#: fixture folders (under $FSL_FIXTURES) of the methods this project implements
PARITY_METHODS = ("frn", "deepemd", "mtl", "neg_margin", "simtrans")
for _method in PARITY_METHODS:  # each folder's checkers register themselves on import
    importlib.import_module(f"tests.parity.{_method}_checks")


def _cases():
    for method in PARITY_METHODS:
        specs = manifest_specs(FIXTURES / method)
        if specs is None:
            yield pytest.param(method, None, id=f"{method}-absent")
            continue
        assert specs, f"{FIXTURES / method}/manifest.json lists no fixtures"
        for spec in specs:
            yield pytest.param(method, spec, id=f"{method}/{spec['file']}")  # -k <method> selects a folder


@pytest.mark.parametrize("method,spec", list(_cases()))
def test_parity(method, spec):
    if spec is None:
        pytest.skip(f"{FIXTURES / method}/manifest.json not available")
    checker = CHECKERS.get(spec["kind"])
    assert checker is not None, f"{spec['file']}: no checker handles kind {spec['kind']!r}"
    entry = Entry(FIXTURES / method, spec)
    checker(entry)
    entry.assert_all_outputs_checked()
    if entry.noise_issues:
        message = (f"{spec['file']}: diagnosed imprecision of the reference beyond the listed tolerance: "
                   + "; ".join(entry.noise_issues))
        if os.environ.get("FSL_PARITY_STRICT") == "1":
            pytest.fail(message)
        pytest.xfail(message)
