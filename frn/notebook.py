"""Helpers shared by the notebooks (notebooks/*.ipynb), and the command that runs them.

In a notebook: `paths(DATA_ROOT, WORK)` names the folders its printed lines may show (they are
printed as `DATA_ROOT/...`, `WORK/...`, `./...` for the repository, so that no output names the
machine that made it); `stages(...)` turns a preset (flags per stage, or a paper-row config) into
its stages with the run folder each training stage writes, computed by the entry scripts' own
naming (`frn.runs.training_run_folder`); `train(stage, resume)` runs a training stage afresh
(`--overwrite`) or continues it (`--resume`); `run(script, *args)` runs any entry script with its
output streamed into the notebook; `show(fig, name, folder)` displays a figure and keeps a PNG.

On the command line, `python -m frn.notebook --execute [names]` runs the committed notebooks'
quick preset top to bottom (data and work folders in a temporary folder) and saves each with its
outputs, in place: what a reader on GitHub or AI Studio sees before running anything.

A notebook first finds the repository (the folder holding pretrain.py) and puts it on sys.path;
only then can it import this module.
"""
import argparse
import contextlib
import hashlib
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
#: (absolute folder, what printed lines show instead), longest folder first
_PLACES: List[Tuple[str, str]] = []
#: the parameters a notebook run may be given from outside (everything else is the preset's)
PATH_PARAMETERS = ("DATA_ROOT", "WORK")
#: the sentence of a notebook's introduction that states its quick preset's time budget
BUDGET = re.compile(r"quick\s+preset\s+takes\s+longer\s+than\s+(\d+)\s+minutes?")


# ----------------------------------------------------------------------------------------
# printed paths
# ----------------------------------------------------------------------------------------
def paths(data_root: str, work: str) -> None:
    """Name the folders that printed lines show by placeholder: DATA_ROOT, WORK, `.` for the
    repository (the notebook's working folder) and <python> for the interpreter's prefix."""
    places = {os.path.abspath(data_root): "DATA_ROOT", os.path.abspath(work): "WORK", str(REPO): ".",
              sys.prefix: "<python>", sys.base_prefix: "<python>", os.path.expanduser("~"): "~"}
    _PLACES[:] = sorted(((folder, name) for folder, name in places.items() if len(folder) > 1),
                        key=lambda item: -len(item[0]))


def tidy(text: str) -> str:
    """`text` with every registered folder replaced by its placeholder."""
    for folder, name in _PLACES:
        text = text.replace(folder, name)
    return text


def say(*parts) -> None:
    """print(), with folders shown by placeholder."""
    print(tidy(" ".join(str(p) for p in parts)), flush=True)


# ----------------------------------------------------------------------------------------
# running entry scripts
# ----------------------------------------------------------------------------------------
def run(script: str, *args) -> str:
    """Run `python script args` in the repository, print its output as it comes (folders by
    placeholder), raise when it fails; returns the whole output."""
    words = [str(a) for a in args]
    say("$ python", script, " ".join(shlex.quote(a) for a in words))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.setdefault("TQDM_DISABLE", "1")   # progress bars do not render through a pipe
    lines = []
    with subprocess.Popen([sys.executable, script, *words], cwd=REPO, env=env, text=True, bufsize=1,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        assert proc.stdout is not None   # stdout=PIPE
        for line in proc.stdout:
            print(tidy(line), end="", flush=True)
            lines.append(line)
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed with exit code {proc.returncode} (see its output above)")
    return "".join(lines)


class Stage(NamedTuple):
    """One step of a preset: an entry script, its flags, and the run folder a training stage
    writes (None for a test)."""
    script: str
    flags: List[str]
    folder: Optional[str]


def run_folder(script: str, flags: Sequence[str]) -> str:
    """The folder `python script flags` trains into, by the entry script's own naming."""
    from frn.configs import parsed_stage
    from frn.runs import training_run_folder
    return training_run_folder(parsed_stage(script, [str(f) for f in flags]))


def stages(steps: Dict[str, Tuple[str, Sequence]]) -> Dict[str, Stage]:
    """{name: (script, flags)} in order -> {name: Stage}; a flag value `{name}` (e.g.
    "{pretrain}/best_model.pdparams") is replaced by the run folder of the earlier stage `name`."""
    out: Dict[str, Stage] = {}
    for name, (script, flags) in steps.items():
        words = [str(f) for f in flags]
        for earlier, stage in out.items():
            if stage.folder is not None:
                words = [w.replace("{" + earlier + "}", stage.folder) for w in words]
        training = script in ("pretrain.py", "meta_train.py")
        out[name] = Stage(script, words, run_folder(script, words) if training else None)
    return out


def _is_flag(word: str) -> bool:
    """A flag name (`--lr`, `-shot`), not a value such as `-0.005`."""
    if not word.startswith("-"):
        return False
    try:
        float(word)
    except ValueError:
        return True
    return False


def with_flag(flags: Sequence, name: str, *values) -> List[str]:
    """`flags` with the values of `name` replaced by `values` (or `name values` appended): one
    stage of a preset run with another setting, e.g. a margin sweep from one paper-row stage."""
    words = [str(f) for f in flags]
    new = [name, *(str(v) for v in values)]
    if name not in words:
        return words + new
    start = words.index(name)
    end = start + 1
    while end < len(words) and not _is_flag(words[end]):
        end += 1
    return words[:start] + new + words[end:]


@contextlib.contextmanager
def _environment(variables: Dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update({name: str(value) for name, value in variables.items()})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def config_stages(config: str, **variables) -> Dict[str, Stage]:
    """The stages of a paper-row config (configs/<method>/<row>.yaml) with its ${VARIABLES}
    (e.g. DATA, CKPT) set: exactly what `bash scripts/run.sh config` runs."""
    from frn.configs import load_config, plan
    with _environment(variables):
        steps = plan(load_config(str(REPO / config)))
    # entry scripts and `python -m` steps (e.g. SimTrans's data.weakshot); shell steps are run.sh's own
    return {name: Stage(argv[0], argv[1:], folder) for name, argv, folder in steps
            if argv[0].endswith(".py") or argv[0] == "-m"}


def paper_command(config: str, **variables) -> str:
    """The one-line shell command that runs a config's stages outside the notebook."""
    assignments = " ".join(f"{name}={shlex.quote(tidy(str(value)))}" for name, value in variables.items())
    return f"{assignments} bash scripts/run.sh {config}".strip()


def train(stage: Stage, resume: bool = False) -> str:
    """Run a training stage and return its run folder. Afresh (`--overwrite`: an earlier run in
    the folder is replaced) unless `resume`: then a run that finished before is kept (skipped), an
    unfinished one continues (`--resume FOLDER`) and a missing one starts."""
    from frn.configs import ABSENT, FINISHED, GIVEN, UNFINISHED, stage_epochs, training_status
    if stage.folder is None:
        raise ValueError(f"{stage.script} is not a training stage")
    extra = ["--overwrite"]
    if resume:
        status, words = training_status(stage.folder, stage_epochs(stage.script, ["", *stage.flags]))
        if status in (FINISHED, GIVEN):
            say(f"{stage.folder}: done before ({words}), kept")
            return stage.folder
        extra = ["--resume", stage.folder] if status == UNFINISHED else []
        if status != ABSENT:
            say(f"{stage.folder}: {words}, resuming")
    run(stage.script, *stage.flags, *extra)
    return stage.folder


def show(fig, name: str, folder: str) -> str:
    """Display a matplotlib figure in the notebook and save it as <folder>/<name>.png (returned);
    a modest resolution keeps the committed notebooks small."""
    import io

    from IPython.display import Image, display
    from PIL import Image as PILImage
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.png")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    # a 256-colour palette keeps photo-like panels (episodes, reconstructions) a few times smaller
    # than full RGB, with no visible loss at this resolution
    picture = PILImage.open(buffer).convert("RGB").quantize(colors=256)
    picture.save(path, optimize=True)
    display(Image(filename=path))
    return path


def finish(preset: str, start: float) -> None:
    """Print the notebook's wall time on this machine (the run-time table's measured number)."""
    import paddle
    if paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        device = f"GPU {paddle.device.cuda.get_device_name(0)}"
    else:
        device = f"CPU ({os.cpu_count()} cores)"
    print(f"{preset} preset: {time.time() - start:.0f} s from the first cell to the last, on {device}, "
          f"Paddle {paddle.__version__}")


# ----------------------------------------------------------------------------------------
# executing the notebooks (python -m frn.notebook --execute; the notebook tests)
# ----------------------------------------------------------------------------------------
def budget_seconds(nb) -> int:
    """The quick preset's time budget the notebook states ("... quick preset takes longer than N
    minutes"): the notebook tests fail past it."""
    for cell in nb.cells:
        found = BUDGET.search(cell.source) if cell.cell_type == "markdown" else None
        if found:
            return 60 * int(found.group(1))
    raise ValueError("the notebook states no time budget for its quick preset")


def sources_digest(nb) -> str:
    """sha256 of the notebook's code cells: the committed outputs are those of these sources."""
    code = "\n\0".join(cell.source for cell in nb.cells if cell.cell_type == "code")
    return hashlib.sha256(code.encode()).hexdigest()


def parameters_index(nb) -> int:
    return next(i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", []))


def execute(nb, data_root: str, work: str, **parameters) -> float:
    """Execute `nb` in place on its committed preset, with its data and work folders moved to
    `data_root` and `work` (and `parameters`, e.g. another VARIANT, assigned after the parameters
    cell); a kernel on this interpreter, the repository as working folder. Raises on the first
    failing cell or past the notebook's budget. Returns the wall seconds."""
    import nbclient
    import nbformat
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    assigned = {"DATA_ROOT": data_root, "WORK": work, **parameters}
    injected = nbformat.v4.new_code_cell("\n".join(f"{name} = {value!r}" for name, value in assigned.items()))
    injected.metadata["tags"] = ["injected-parameters"]
    at = parameters_index(nb) + 1
    nb.cells.insert(at, injected)
    budget = budget_seconds(nb)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=budget, record_timing=False,
                                     resources={"metadata": {"path": str(REPO)}})
    start = time.time()
    try:
        client.execute()
    finally:
        nb.cells.pop(at)
    seconds = time.time() - start
    if seconds > budget:
        raise RuntimeError(f"the quick preset took {seconds:.0f} s, longer than the notebook's budget of {budget} s")
    return seconds


#: the measured quick-preset time in a notebook's run-time table, rewritten by each --execute
MEASURED = re.compile(r"(__QUICK_CPU__|about \d+ s) \(measured")


def _merge_streams(outputs: list) -> list:
    """Consecutive outputs of the same stream joined into one (a subprocess's output arrives line
    by line; one block per cell reads better and keeps the file small)."""
    merged: list = []
    for out in outputs:
        last = merged[-1] if merged else None
        if (out.output_type == "stream" and last is not None and last.output_type == "stream"
                and last.name == out.name):
            last.text += out.text
        else:
            merged.append(out)
    return merged


def measured_label(seconds: int) -> str:
    """How the run-time table shows a measured time: to the nearest 10 s (half up)."""
    return f"about {max(10, (seconds + 5) // 10 * 10)} s (measured"


def _record_time(nb, seconds: int) -> None:
    """Write the measured time into the run-time table of the introduction."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = MEASURED.sub(measured_label(seconds), cell.source)


def _renumber(nb) -> None:
    """Execution counts 1, 2, ... (the injected cell's number left out)."""
    count = 0
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = _merge_streams(cell.outputs)
            count += 1
            cell.execution_count = count
            for out in cell.outputs:
                if "execution_count" in out:
                    out["execution_count"] = count


def execute_in_place(name: str) -> Tuple[float, int]:
    """Run notebooks/<name>.ipynb's quick preset in a temporary folder and save it with its
    outputs. Returns (seconds, bytes written)."""
    import nbformat
    path = NOTEBOOKS / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="fsl-notebook-") as tmp:
        seconds = execute(nb, os.path.join(tmp, "data"), os.path.join(tmp, "work"))
    _renumber(nb)
    _record_time(nb, round(seconds))
    import paddle
    nb.metadata["quick_preset_run"] = {"sources_sha256": sources_digest(nb), "seconds": round(seconds),
                                       "paddle": paddle.__version__}
    nbformat.write(nb, path)
    return seconds, path.stat().st_size


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m frn.notebook",
                                     description="Run the notebooks' quick preset and save them with their outputs.")
    parser.add_argument("--execute", nargs="*", metavar="NAME", required=True,
                        help="notebooks to run (names in notebooks/, without .ipynb; default: all)")
    args = parser.parse_args(argv)
    names = args.execute or sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    os.environ.setdefault("TQDM_DISABLE", "1")
    for name in names:
        seconds, size = execute_in_place(name)
        print(f"notebooks/{name}.ipynb: quick preset in {seconds:.0f} s, {size / 1024:.0f} KB with outputs",
              flush=True)


if __name__ == "__main__":
    main()
