"""Paper rows as data: one YAML file per published table row (configs/<method>/<row>.yaml),
inheriting a per-method base, read by the entry scripts (`--config F`) and run stage by stage
by `python -m frn.configs F` (or `bash scripts/run.sh F`).

    _base_: _base_.yaml                  # one file or a list, merged first (this file wins)
    row: FRN, mini-ImageNet, ResNet-12   # what the row is
    paper: {source: "FRN (CVPR 2021) Table 7", 1-shot: "66.45 +- 0.19", 5-shot: "82.83 +- 0.13"}
    data: "mini-ImageNet in the CSV layout; filelists: python write_miniImagenet_filelist.py ..."
    variables: {CKPT: ./checkpoints}     # ${NAME} is replaced by the environment's value, else this
    common: {dataset: mini_imagenet, data_path: "${DATA}", model: ResNet12, gpu: true}
    stages:                              # run in this order
      pretrain: {script: pretrain.py, flags: {method: stl_frn, lr: 0.1, ...}}
      meta_train: {script: meta_train.py, flags: {..., pretrain_path: "{pretrain}/best_model.pdparams"}}
      test_1shot: {script: test.py, flags: {n_shot: 1, model_path: "{meta_train}/best_model.pdparams"}}

A file's mappings merge over its base's key by key, and the stages keep the base's order (a row
adds stages after them); `null` removes what the base set (`pretrain: null` drops that stage,
`pretrain_path: null` that flag, `1-shot: null` that paper number; an empty section changes
nothing). Flags are written without dashes (`lr: 0.1` is `--lr 0.1`; a key that starts with "-"
is kept as written, e.g. `-deepemd: fcn`); `true` is a bare switch, `false` leaves it out, a list
gives several values. `{stage}` is the run folder the stage of that name writes (computed by the same
code the entry script uses), so each stage's output is the next one's input by construction.
`common` flags go to every entry-point stage. A stage may run another tool of the repository
(`script: write_miniImagenet_filelist.py` or `module: data.weakshot` with `args: [...]`).

The runner skips a training stage whose run folder holds a finished run (history.json has the
stage's epochs, or the run stopped early), resumes one that stopped before (--resume), and refuses a
stage that reads an unfinished training's model; extra flags reach only the stages whose parser
(with the stage's method) knows them.
"""
import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from utils.errors import OneLineParser, UserError, exit_on_user_error

REPO = Path(__file__).resolve().parents[1]
ENTRY_SCRIPTS = ("pretrain.py", "meta_train.py", "test.py")
TRAINING_SCRIPTS = ("pretrain.py", "meta_train.py")
#: ${VARIABLE} or {stage}, replaced in one pass (a value from the environment is never read again)
_REFERENCE = re.compile(r"\$\{(\w+)\}|\{(\w+)\}")


# ----------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------
def _read_yaml(path: Path) -> dict:
    import yaml
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except OSError:
        raise UserError(f"config {path} does not exist; pass a file of configs/") from None
    except yaml.YAMLError as err:
        raise UserError(f"config {path} is not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"config {path} must be a mapping (keys such as stages, common, paper)")
    return data


def merge(base: dict, override: dict) -> dict:
    """`override` on top of `base`, mappings merged key by key (a stage's flags too); a key set to
    None in `override` is removed (a row drops a stage, flag or number its base has)."""
    out = dict(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            out[key] = merge(out[key] if isinstance(out.get(key), dict) else {}, value)
        else:
            out[key] = value
    return out


def load_config(path: str) -> dict:
    """A config with its `_base_` files merged under it (paths relative to the config)."""
    path_ = Path(path)
    # a section left empty (`common:` with nothing under it) changes nothing; null removes only
    # entries inside a section
    data = {key: value for key, value in _read_yaml(path_).items() if value is not None}
    bases = data.pop("_base_", [])
    merged: dict = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = merge(merged, load_config(str(path_.parent / base)))
    merged = merge(merged, data)
    merged["_path"] = str(path_)
    return merged


def stages_of(config: dict) -> Dict[str, dict]:
    stages = config.get("stages")
    if not isinstance(stages, dict) or not stages:
        raise UserError(f"config {config.get('_path')} has no stages")
    return stages


# ----------------------------------------------------------------------------------------
# command lines
# ----------------------------------------------------------------------------------------
def variable(name: str, config: dict) -> str:
    """${NAME}: the environment's value, else the config's `variables`, else a one-line error (an
    empty value counts as unset, as the shell's ${NAME:-default} and ${NAME:?message})."""
    if os.environ.get(name):
        return os.environ[name]
    defaults = config.get("variables") or {}
    if name in defaults:
        return expand(str(defaults[name]), config, {})
    needs = f" (what it needs: {config['data']})" if config.get("data") else ""
    raise UserError(f"config {config.get('_path')} needs ${{{name}}}: set it, e.g. "
                    f"{name}=/path bash scripts/run.sh {config.get('_path')}{needs}")


def expand(value: str, config: dict, folders: Dict[str, str]) -> str:
    """Replace ${VARIABLE}s and {stage} references in one value."""
    def replace(match: "re.Match[str]") -> str:
        name, stage = match.groups()
        if name is not None:
            return variable(name, config)
        if stage not in folders:
            raise UserError(f"config {config.get('_path')}: {{{stage}}} names no earlier training stage "
                            f"(stages: {', '.join(stages_of(config))})")
        return folders[stage]
    return _REFERENCE.sub(replace, value)


def stage_references(value: Any) -> List[str]:
    """The stages whose run folder a value names ({stage}; ${VARIABLE}s are not stages)."""
    return [stage for _, stage in _REFERENCE.findall(str(value)) if stage]


def flag_words(flags: Dict[str, Any], config: dict, folders: Dict[str, str]) -> List[str]:
    """The command-line words of a stage's flags."""
    words: List[str] = []
    for key, value in flags.items():
        option = key if key.startswith("-") else f"--{key}"
        if value is False or value is None:
            continue
        words.append(option)
        if value is True:
            continue
        for item in value if isinstance(value, list) else [value]:
            words.append(expand(str(item), config, folders))
    return words


def stage_command(config: dict, name: str, folders: Dict[str, str]) -> Tuple[List[str], Optional[str]]:
    """(argv after `python`, the stage's entry script or None) of one stage."""
    stage = stages_of(config)[name]
    if "module" in stage:
        return ["-m", stage["module"], *[expand(str(a), config, folders) for a in stage.get("args", [])],
                *flag_words(stage.get("flags") or {}, config, folders)], None
    script = stage.get("script")
    if not script:
        raise UserError(f"config {config.get('_path')}: stage {name!r} names neither a script nor a module")
    flags = dict(stage.get("flags") or {})
    if script in ENTRY_SCRIPTS:
        flags = {**(config.get("common") or {}), **flags}
    args = [expand(str(a), config, folders) for a in stage.get("args", [])]
    return [script, *args, *flag_words(flags, config, folders)], script if script in ENTRY_SCRIPTS else None


def parsed_stage(script: str, argv: Sequence[str]) -> argparse.Namespace:
    """A stage's flags parsed by the entry script's own parser (its errors are one line)."""
    from frn.args import meta_train_parser, parse, pretrain_parser, test_parser
    parser = {"pretrain.py": pretrain_parser, "meta_train.py": meta_train_parser, "test.py": test_parser}[script]
    return parse(parser(), list(argv))


def plan(config: dict, extra: Sequence[str] = ()) -> List[Tuple[str, List[str], Optional[str]]]:
    """Every stage as (name, argv after `python`, run folder of a training stage or None), each
    training stage's folder computed from its parsed flags, so later stages get it."""
    from frn.runs import training_run_folder
    folders: Dict[str, str] = {}
    steps = []
    for name in stages_of(config):
        argv, script = stage_command(config, name, folders)
        run_dir = None
        if script is not None:
            argv = argv + accepted(script, extra, argv[1:])
            if script in TRAINING_SCRIPTS:
                run_dir = training_run_folder(parsed_stage(script, argv[1:]))
                shared = [other for other, folder in folders.items() if folder == run_dir]
                if shared:  # e.g. one --run_name for every stage: the later one would be skipped as done
                    raise UserError(f"config {config.get('_path')}: stages {shared[0]} and {name} would both write "
                                    f"{run_dir}; give --run_name to one entry script, not to the whole config")
                folders[name] = run_dir
            else:
                parsed_stage(script, argv[1:])  # a test stage's flags are checked before anything runs
        steps.append((name, argv, run_dir))
    return steps


def accepted(script: str, extra: Sequence[str], argv: Sequence[str] = ()) -> List[str]:
    """The words of `extra` whose flags the entry script knows for the method its stage runs
    (`argv`, the stage's own words): a training-only flag such as --epoch does not reach test.py,
    nor a flag of another method's options (MTL's --pre_max_epoch) an FRN stage."""
    from frn.args import add_method_options, meta_train_parser, method_of, pretrain_parser, test_parser
    from methods import METHODS
    from utils.flags import parser_flags
    parser = {"pretrain.py": pretrain_parser, "meta_train.py": meta_train_parser, "test.py": test_parser}[script]()
    method = method_of([*argv, *extra], parser.get_default("method"))
    if method in METHODS:
        add_method_options(parser, METHODS[method])
    known = set(parser_flags(parser))
    words, keep = [], False
    for word in extra:
        if word.startswith("-") and not _is_number(word):
            keep = word.split("=")[0] in known
        if keep:
            words.append(word)
    return words


def _is_number(word: str) -> bool:
    try:
        float(word)
        return True
    except ValueError:
        return False


def config_argv(path: str, script: str, stage: Optional[str]) -> List[str]:
    """The flags a config gives an entry script (`--config F [--stage S]`)."""
    config = load_config(path)
    names = [n for n, s in stages_of(config).items() if s.get("script") == script]
    if stage is not None and stage not in names:
        raise UserError(f"config {path} has no {script} stage {stage!r} "
                        f"(its {script} stages: {', '.join(names) or 'none'})")
    if stage is None and len(names) != 1:
        raise UserError(f"config {path} has {len(names) or 'no'} {script} stages ({', '.join(names)}); "
                        f"pick one with --stage")
    wanted = stage or names[0]
    for name, argv, _ in plan(config):
        if name == wanted:
            return argv[1:]
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------------------
# running
# ----------------------------------------------------------------------------------------
def done(run_dir: Optional[str]) -> bool:
    """Whether a training stage has a best model (it trained before). A relative run folder is the
    repository's: the stages run there, wherever the runner was started."""
    return run_dir is not None and os.path.isfile(os.path.join(REPO, run_dir, "best_model.pdparams"))


#: what `training_status` finds in a training stage's run folder
ABSENT, FINISHED, UNFINISHED, GIVEN = "absent", "finished", "unfinished", "given"


def epochs_trained(folder: str) -> Optional[int]:
    """Epochs a run folder's history.json records (None without one)."""
    path = os.path.join(folder, "history.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            history = json.load(f)
        return 1 + max((int(h["epoch"]) for h in history), default=-1)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stopped_early(folder: str) -> bool:
    """Whether the run's log says it stopped early (--stop_th) after its last start."""
    path = os.path.join(folder, "output.log")
    if not os.path.isfile(path):
        return False
    with open(path, errors="replace") as f:
        events = [line for line in f if line.startswith(("start", "resuming", "early stop"))]
    return bool(events) and events[-1].startswith("early stop")


def training_status(run_dir: str, epochs: int) -> Tuple[str, str]:
    """(status, what it is in words) of a training stage's run folder: ABSENT (no model), FINISHED
    (its history.json has the stage's `epochs` or the run stopped early), UNFINISHED (a model of a run
    that stopped before: killed, or a shorter --epoch) or GIVEN (a best model without any training
    record: put there by hand, e.g. a converted official checkpoint)."""
    folder = os.path.join(REPO, run_dir)
    has_model = os.path.isfile(os.path.join(folder, "best_model.pdparams"))
    has_resume = os.path.isfile(os.path.join(folder, "resume.pdstate"))
    trained = epochs_trained(folder)
    if not has_model and not has_resume:
        return ABSENT, "no model yet"
    if trained is None:
        return (GIVEN, "a best model without training history") if not has_resume else \
               (UNFINISHED, "a resume state without history.json")
    if trained >= epochs or stopped_early(folder):
        return FINISHED, f"{trained} epochs"
    return UNFINISHED, f"{trained} of {epochs} epochs"


def stage_epochs(script: str, argv: Sequence[str]) -> int:
    """The --epoch of a training stage (each method's spelling of it lands there)."""
    return int(parsed_stage(script, argv[1:]).epoch)


def check_inputs_finished(config: dict, name: str, statuses: Dict[str, Tuple[str, str, str]]) -> None:
    """Refuse, in one line, a stage that reads the model of a training stage that did not finish
    (and is not trained by this run): its best model would be a partial run's."""
    stage = stages_of(config)[name]
    values = list((stage.get("flags") or {}).values()) + list(stage.get("args") or [])
    for source in dict.fromkeys(ref for value in values for ref in stage_references(value)):
        status, words, run_dir = statuses.get(source, (ABSENT, "", ""))
        if status == UNFINISHED:
            raise UserError(f"stage {name} reads the model of stage {source}, whose training in {run_dir} did not "
                            f"finish ({words}); run the config again to resume it, or retrain it with --overwrite")


#: one stage of a run: (name, argv after `python` or None when skipped, what the runner says of it)
Action = Tuple[str, Optional[List[str]], str]


def decide(config: dict, steps, afresh: bool, only: Sequence[str] = ()) -> List[Action]:
    """What each stage of a run does: a training stage that finished before is skipped, one that
    stopped before its last epoch resumes (--resume its run folder), every stage trains afresh with
    --overwrite (`afresh`); a stage that reads an unfinished training's model is refused."""
    statuses: Dict[str, Tuple[str, str, str]] = {}  # training stage -> (status, words, run folder)
    actions: List[Action] = []
    for name, argv, run_dir in steps:
        if run_dir is not None:
            status, words = training_status(run_dir, stage_epochs(argv[0], argv))
            statuses[name] = (status, words, run_dir)
        if only and name not in only:
            continue
        check_inputs_finished(config, name, statuses)
        note = ""
        if run_dir is not None and not afresh:
            status, words, _ = statuses[name]
            if status in (FINISHED, GIVEN):
                actions.append((name, None, f"done before ({run_dir}/best_model.pdparams, {words}): skipped"))
                continue
            if status == UNFINISHED:
                if not os.path.isfile(os.path.join(REPO, run_dir, "resume.pdstate")):
                    raise UserError(f"stage {name}: {run_dir} holds an unfinished run ({words}) without "
                                    f"resume.pdstate; train it afresh with --overwrite")
                argv = argv + ["--resume", run_dir]
                note = f"resuming the unfinished run in {run_dir} ({words})"
        if run_dir is not None:
            statuses[name] = (FINISHED, "trained by this run", run_dir)
        actions.append((name, argv, note))
    return actions


def preflight(actions: Sequence[Action], produced: Sequence[str]) -> None:
    """Check, before any stage writes anything, what the stages to run read from outside the run:
    e.g. a SimTrans step's ImageNet start (a converted file that must exist, or Paddle's weights,
    downloaded now: offline, one line). Inputs below a run folder of the config (`produced`) are
    written by earlier stages and not checked here."""
    from frn.runs import preflight as check_stage
    for _, argv, _ in actions:
        if argv is not None and argv[0] in ENTRY_SCRIPTS:
            check_stage(parsed_stage(argv[0], argv[1:]), produced)


def run(config_path: str, extra: Sequence[str] = (), dry_run: bool = False, only: Sequence[str] = ()) -> None:
    """Run a config's stages in order (`decide` says which run, resume or are skipped); the
    external inputs of the stages to run are checked first (`preflight`)."""
    config = load_config(config_path)
    for line in describe(config):
        print(line)
    steps = plan(config, extra)
    actions = decide(config, steps, "--overwrite" in extra, only)
    if not dry_run:
        preflight(actions, [run_dir for _, _, run_dir in steps if run_dir])
    for name, argv, note in actions:
        if argv is None:
            print(f"[{name}] {note}", flush=True)
            continue
        if note:
            print(f"[{name}] {note}", flush=True)
        print(f"[{name}] {' '.join(shlex.quote(w) for w in ['python', *argv])}", flush=True)
        if dry_run:
            continue
        result = subprocess.run([sys.executable, *argv], cwd=REPO)
        if result.returncode != 0:
            raise UserError(f"stage {name} failed (exit code {result.returncode}); its output is above")


def describe(config: dict) -> List[str]:
    """The row, its paper numbers and its data, as lines."""
    lines = [f"row: {config.get('row', config['_path'])}"]
    paper = config.get("paper") or {}
    numbers = ", ".join(f"{k} {v}" for k, v in paper.items() if k != "source")
    if numbers:
        lines.append(f"paper ({paper.get('source', 'reported')}): {numbers}")
    elif paper.get("source"):
        lines.append(f"paper: {paper['source']}")
    if config.get("data"):
        lines.append(f"data: {config['data']}")
    return lines


def parse_args(argv: Optional[Sequence[str]] = None) -> Tuple[argparse.Namespace, List[str]]:
    parser = OneLineParser(prog="python -m frn.configs",
                           description="Run the stages of a paper-row config (configs/<method>/<row>.yaml).")
    parser.add_argument("config", help="the row's YAML file")
    parser.add_argument("--dry_run", action="store_true", help="print the stages' commands, run nothing")
    parser.add_argument("--stages", nargs="*", default=[], help="run only these stages (names of the config)")
    args, extra = parser.parse_known_args(argv)
    return args, extra


@exit_on_user_error
def main(argv: Optional[Sequence[str]] = None) -> None:
    """python -m frn.configs CONFIG [--dry_run] [--stages a b] [extra flags for every stage that knows them]"""
    args, extra = parse_args(argv)
    run(args.config, extra, args.dry_run, args.stages)


if __name__ == "__main__":
    main()
