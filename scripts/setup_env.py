"""Set up this repository's dependencies without breaking the Paddle a machine already has.

    python scripts/setup_env.py            # what the code needs (requirements.txt)
    python scripts/setup_env.py --dev      # and what the tests and notebooks' execution need
    python scripts/setup_env.py --dry_run  # say what would be installed, install nothing

- A Paddle is installed (AI Studio, a GPU machine): it is kept as it is (version, CUDA build).
  Only the packages of requirements.txt that are missing are installed, in versions that fit that
  Paddle (Paddle 2.x was built for numpy 1: numpy < 2 and the last opencv build for numpy 1),
  with pip constrained so that it cannot replace Paddle or an installed package.
- No Paddle (a fresh CPU machine): requirements.txt is installed whole (CPU paddlepaddle, pinned).

Prints one line: the Paddle found (version, CUDA or CPU build, the GPU's name) and what was
installed. Runs before anything else is installed, so it uses only the standard library and
pip; Paddle is probed in a child process, so a broken Paddle cannot crash this tool.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: the Paddle releases the code is tested with (the oldest, and the pinned newest)
OLDEST_TESTED, PINNED = (2, 6), "3.3.1"
#: packages that need another version under Paddle 2.x (built for numpy 1) than the pinned one:
#: name -> (requirement lines for Paddle 2.x, test of an installed version that does not fit)
PADDLE2_COMPANIONS = {
    "numpy": (['{name}==1.26.4; python_version >= "3.9"', '{name}>=1.23,<2; python_version < "3.9"'],
              lambda version: major(version) >= 2),
    # 4.11.0.86 is the last build for numpy 1; later ones require numpy >= 2 ({name}: the
    # installed variant, e.g. opencv-python, so that two builds never share the cv2 module)
    "opencv-python-headless": (["{name}==4.11.0.86"], lambda version: version_tuple(version) > (4, 11, 0, 86)),
}
#: a requirement is met by any of these distributions (they install the same module)
SAME_MODULE = {
    "opencv-python-headless": ("opencv-python-headless", "opencv-python", "opencv-contrib-python",
                               "opencv-contrib-python-headless"),
    "pillow": ("pillow", "pillow-simd"),
}
#: what the child process prints about the Paddle it imports
PROBE = """
import json, paddle
info = {"version": paddle.__version__, "cuda": paddle.is_compiled_with_cuda(), "cuda_version": None, "gpus": []}
if info["cuda"]:
    info["cuda_version"] = paddle.version.cuda()
    count = paddle.device.cuda.device_count()
    info["gpus"] = [paddle.device.cuda.get_device_name(i) for i in range(count)]
print("PROBE " + json.dumps(info))
"""


class Paddle(NamedTuple):
    """The Paddle distribution installed, and what importing it showed."""
    distribution: str              # paddlepaddle, paddlepaddle-gpu, ...
    version: str                   # the distribution's version
    info: Optional[dict]           # the probe's answer, None when `import paddle` failed
    error: str                     # why the import failed ("" when it worked)


class Requirement(NamedTuple):
    name: str                      # normalised (PEP 503)
    line: str                      # as written, marker included, comment removed


# ----------------------------------------------------------------------------------------
# versions and requirement lines
# ----------------------------------------------------------------------------------------
def normalise(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. become one -."""
    return re.sub(r"[-_.]+", "-", name).lower()


def version_tuple(version: str) -> Tuple[int, ...]:
    """The leading numeric release of a version string ("2.6.2.post120" -> (2, 6, 2))."""
    numbers = re.match(r"\d+(\.\d+)*", version)
    return tuple(int(n) for n in numbers.group(0).split(".")) if numbers else (0,)


def major(version: str) -> int:
    return version_tuple(version)[0]


def read_requirements(path: str) -> List[Requirement]:
    """The requirement lines of a requirements file (comments, blank lines, -r includes and
    options left out)."""
    requirements = []
    with open(path) as f:
        for raw in f:
            line = raw.split(" #")[0].strip()
            if not line or line.startswith(("#", "-")):
                continue
            name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
            if name:
                requirements.append(Requirement(normalise(name.group(0)), line))
    return requirements


# ----------------------------------------------------------------------------------------
# what is installed
# ----------------------------------------------------------------------------------------
def installed_versions() -> Dict[str, str]:
    """{normalised distribution name: version} of this interpreter's environment."""
    from importlib import metadata
    versions = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            versions.setdefault(normalise(name), dist.version)
    return versions


def paddle_distribution(installed: Dict[str, str]) -> Optional[Tuple[str, str]]:
    """(name, version) of the installed Paddle distribution (CPU, GPU or a CUDA-specific build)."""
    found = sorted((name, version) for name, version in installed.items() if name.startswith("paddlepaddle"))
    return found[0] if found else None


def probe_paddle(timeout: float = 300.0) -> Tuple[Optional[dict], str]:
    """Import Paddle in a child process: (version, CUDA build, CUDA version, GPU names) or None
    and the last line of the error."""
    try:
        result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"importing it took more than {timeout:.0f} s"
    for line in result.stdout.splitlines():
        if line.startswith("PROBE "):
            return json.loads(line[len("PROBE "):]), ""
    lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
    return None, lines[-1].strip() if lines else f"exit code {result.returncode}"


def find_paddle(installed: Dict[str, str]) -> Optional[Paddle]:
    dist = paddle_distribution(installed)
    if dist is None:
        return None
    info, error = probe_paddle()
    return Paddle(dist[0], dist[1], info, error)


def describe_paddle(paddle: Paddle) -> str:
    """e.g. 'paddlepaddle-gpu 2.6.2 (CUDA 12.0, GPU Tesla V100-SXM2-32GB)'."""
    found = f"{paddle.distribution} {paddle.version}"
    if paddle.info is None:
        return f"{found} (import paddle fails: {paddle.error})"
    info = paddle.info
    if not info["cuda"]:
        return f"{found} (CPU build)"
    gpus = info["gpus"]
    device = (f"GPU {gpus[0]}" + (f" and {len(gpus) - 1} more" if len(gpus) > 1 else "")) if gpus else "no GPU visible"
    return f"{found} (CUDA {info['cuda_version']}, {device})"


# ----------------------------------------------------------------------------------------
# what to install
# ----------------------------------------------------------------------------------------
def installed_as(name: str, installed: Dict[str, str]) -> Optional[Tuple[str, str]]:
    """(distribution, version) installed for requirement `name`: itself or another distribution
    of the same module (opencv-python for opencv-python-headless)."""
    for candidate in SAME_MODULE.get(name, (name,)):
        if candidate in installed:
            return candidate, installed[candidate]
    return None


def plan_install(requirements: Sequence[Requirement], installed: Dict[str, str],
                 paddle: Optional[Paddle]) -> Tuple[List[str], List[str], List[str]]:
    """(requirement lines to install, constraint lines, notes) beside an installed `paddle`:
    the missing packages, and the Paddle-2.x companions that are missing or do not fit; the
    constraints pin Paddle and every package kept, so pip replaces neither."""
    assert paddle is not None
    paddle2 = major(paddle.version) < 3
    lines: List[str] = []
    constraints = [f"{paddle.distribution}=={paddle.version}"]
    notes: List[str] = []
    seen = set()
    for req in requirements:
        if req.name.startswith("paddlepaddle") or req.name in seen:
            continue
        seen.add(req.name)
        have = installed_as(req.name, installed)
        companion = PADDLE2_COMPANIONS.get(req.name) if paddle2 else None
        if have is not None and (companion is None or not companion[1](have[1])):
            constraints.append(f"{have[0]}=={have[1]}")
            continue
        if companion is not None:
            lines += [line.format(name=have[0] if have else req.name) for line in companion[0]]
            if have is not None:
                notes.append(f"{have[0]} {have[1]} does not fit Paddle {paddle.version} (built for numpy 1)")
        else:
            lines += [r.line for r in requirements if r.name == req.name]
    return lines, constraints, notes


def pip_install(arguments: Sequence[str]) -> Tuple[int, str]:
    """Run `python -m pip install -q ARGUMENTS`: (exit code, last line of its error output)."""
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", *arguments],
                            capture_output=True, text=True)
    lines = [line for line in (result.stderr + result.stdout).splitlines()
             if line.strip() and not line.lstrip().startswith(("WARNING", "[notice]"))]
    return result.returncode, lines[-1].strip() if lines else ""


def install_lines(lines: Sequence[str], constraints: Sequence[str]) -> Tuple[int, str]:
    """pip-install requirement lines under constraint lines (temporary files)."""
    with tempfile.TemporaryDirectory() as folder:
        req, con = os.path.join(folder, "requirements.txt"), os.path.join(folder, "constraints.txt")
        with open(req, "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(con, "w") as f:
            f.write("\n".join(constraints) + "\n")
        return pip_install(["-r", req, "-c", con])


def names_of(lines: Sequence[str]) -> List[str]:
    """The distribution names of requirement lines."""
    return [re.match(r"[A-Za-z0-9._-]+", line).group(0) for line in lines]


def newly_installed(before: Dict[str, str], after: Dict[str, str], names: Sequence[str]) -> List[str]:
    """'name version' of each of `names` whose version changed or appeared."""
    return [f"{name} {after[name]}" for name in names if name in after and before.get(name) != after[name]]


# ----------------------------------------------------------------------------------------
# the tool
# ----------------------------------------------------------------------------------------
def requirement_files(dev: bool) -> List[str]:
    files = [os.path.join(REPO, "requirements.txt")]
    return files + [os.path.join(REPO, "requirements-dev.txt")] if dev else files


def setup(dev: bool = False, dry_run: bool = False) -> Tuple[int, str]:
    """Install what is missing; (exit code, the one line that says what was found and done)."""
    if sys.version_info < (3, 8):
        return 1, f"setup: Python {sys.version.split()[0]} is too old; Paddle 2.6 and 3.x need Python 3.8 or newer"
    files = requirement_files(dev)
    requirements = [req for path in files for req in read_requirements(path)]
    names = list(dict.fromkeys(variant for req in requirements for variant in SAME_MODULE.get(req.name, (req.name,))))
    before = installed_versions()
    paddle = find_paddle(before)
    python = f"setup (Python {sys.version_info.major}.{sys.version_info.minor}):"
    if paddle is None:
        arguments = [a for path in files for a in ("-r", path)]
        if dry_run:
            return 0, f"{python} no Paddle found; would install {' and '.join(map(os.path.basename, files))}"
        code, error = pip_install(arguments)
        if code:
            return code, f"{python} no Paddle found; pip could not install {os.path.basename(files[-1])}: {error}"
        done = newly_installed(before, installed_versions(), names)
        return 0, (f"{python} no Paddle found, installed {' and '.join(map(os.path.basename, files))}"
                   f" (CPU paddlepaddle {PINNED}): {', '.join(done) or 'all there already'}")
    lines, constraints, notes = plan_install(requirements, before, paddle)
    found = f"{python} found {describe_paddle(paddle)}, kept it"
    if version_tuple(paddle.version) < OLDEST_TESTED:
        notes.append(f"Paddle {paddle.version} is older than the tested 2.6 to {PINNED}")
    noted = "".join(f"; {note}" for note in notes)
    if not lines:
        return 0, f"{found}; everything in {' and '.join(map(os.path.basename, files))} is installed{noted}"
    if dry_run:
        return 0, f"{found}; would install {', '.join(dict.fromkeys(names_of(lines)))}{noted}"
    code, error = install_lines(lines, constraints)
    if code:
        return code, f"{found}; pip could not install {', '.join(dict.fromkeys(names_of(lines)))}: {error}"
    done = newly_installed(before, installed_versions(), names)
    return 0, f"{found}; installed {', '.join(done) or 'nothing new'}{noted}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="setup_env.py", description=__doc__.splitlines()[0])
    parser.add_argument("--dev", action="store_true", help="also install requirements-dev.txt (tests, notebooks)")
    parser.add_argument("--dry_run", action="store_true", help="say what would be installed, install nothing")
    args = parser.parse_args(argv)
    code, line = setup(args.dev, args.dry_run)
    print(line, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
