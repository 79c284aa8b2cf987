"""The layers of the code base, kept true by scanning every import (module level and inside
functions) of every file.

    entry scripts (pretrain.py, meta_train.py, test.py, predict.py, export.py, ...)
      -> frn/      engine, workflows, checkpoints, conversion, logging, notebooks' figures
      -> methods/  the maths of each method (imports transforms of data/, never datasets or loaders)
      -> data/     filelists, datasets, samplers, transforms
      -> network/  backbones
      -> utils/    errors, flags, options, device, optimisers, statistics: imports nothing of ours

A package may import itself and the packages listed for it in ALLOWED; `infer.py` imports
nothing of the project (an exported model and infer.py are all a deployment needs).
"""
import ast
from pathlib import Path
from typing import Dict, Iterator, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("utils", "network", "data", "methods", "frn")
#: package -> packages it may import (besides itself)
ALLOWED: Dict[str, Set[str]] = {
    "utils": set(),
    "network": {"utils"},
    "data": {"utils"},
    "methods": {"utils", "network", "data"},
    "frn": {"utils", "network", "data", "methods"},
}
#: the only modules of data/ that methods/ may import: image pipelines, never datasets or loaders
METHOD_DATA_MODULES = ("transforms", "_transforms")
#: entry points that must stand alone
STANDALONE = ("infer.py",)


def project_imports(path: Path) -> Iterator[Tuple[str, int]]:
    """(imported module, line) of every absolute import of a project package in `path`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES:
                yield name, node.lineno


def package_files() -> Iterator[Tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield package, path


def forbidden_edge(package: str, module: str) -> bool:
    """Whether `package` may not import `module`."""
    target = module.split(".")[0]
    if target == package:
        return False
    if target not in ALLOWED[package]:
        return True
    if package == "methods" and target == "data":
        leaf = module.split(".")[-1]
        return not (leaf == METHOD_DATA_MODULES[0] or leaf.endswith(METHOD_DATA_MODULES[1]))
    return False


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_the_layers_below(package):
    bad = [f"{path.relative_to(ROOT)}:{line} imports {module}"
           for pkg, path in package_files() if pkg == package
           for module, line in project_imports(path) if forbidden_edge(package, module)]
    assert not bad, "forbidden imports:\n" + "\n".join(bad)


@pytest.mark.parametrize("script", STANDALONE)
def test_deployment_scripts_import_nothing_of_the_project(script):
    path = ROOT / script
    if not path.exists():
        pytest.skip(f"{script} is not part of this tree")
    bad = [f"{script}:{line} imports {module}" for module, line in project_imports(path)]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_a_forbidden_edge():
    """The scan must be able to fail: a data module importing a method, a method building a
    dataset, utils importing anything of ours."""
    assert forbidden_edge("data", "methods.frn")
    assert forbidden_edge("methods", "data.datasets")
    assert forbidden_edge("methods", "frn.engine")
    assert forbidden_edge("utils", "network")
    assert not forbidden_edge("methods", "data.deepemd_transforms")
    assert not forbidden_edge("frn", "methods.base")
