"""Every command in scripts/ parses with the current flags (catches drift between scripts and CLI)."""
import re
import shlex
from pathlib import Path

import pytest

from frn.args import meta_train_parser, parse, pretrain_parser, test_parser
from tests.conftest import ROOT

PARSERS = {"pretrain.py": pretrain_parser, "meta_train.py": meta_train_parser, "test.py": test_parser}
SCRIPTS = sorted((ROOT / "scripts").rglob("*.sh"))


LOOP_VALUES = {"SHOT": "1", "WAY": "5", "DATA": "/data"}


def expand(text: str, variables: dict) -> str:
    """Substitute $NAME / ${NAME...} with the script's own assignments (or a placeholder)."""
    text = text.replace('"$@"', "")
    text = re.sub(r'"(\$\{\w+\[@\]\})"', r"\1", text)  # "${ARRAY[@]}" expands to several words
    return re.sub(r"\$\{?(\w+)[^}\s\"]*\}?", lambda m: variables.get(m.group(1), "/placeholder"), text)


def commands(script: Path):
    """(entry script, its arguments) for every python command, with shell variables expanded."""
    variables = dict(LOOP_VALUES)
    for line in script.read_text().replace("\\\n", " ").splitlines():
        assignment = re.match(r"^\s*(\w+)=(.*)$", line)
        if assignment and assignment.group(1) not in LOOP_VALUES:
            value = assignment.group(2)
            if value.startswith("(") and value.endswith(")"):  # a bash array
                value = value[1:-1]
            variables[assignment.group(1)] = expand(value, variables).strip('"')
        match = re.search(r"python (\w+\.py)(.*)", line)
        if match and match.group(1) in PARSERS:
            yield match.group(1), expand(match.group(2), variables)


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_script_commands_parse(script):
    found = list(commands(script))
    assert found, "no entry-script command found"
    for entry, arguments in found:
        parse(PARSERS[entry](), shlex.split(arguments))
