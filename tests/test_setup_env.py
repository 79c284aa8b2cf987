"""scripts/setup_env.py: keeps an installed Paddle (never a paddlepaddle line for pip, pip constrained to
its version), installs only what is missing, with numpy-1 companions under Paddle 2.x, installs
requirements.txt whole without a Paddle, survives a broken Paddle, and says it all in one line.
pip and the environment are faked here; .ci/run uses the tool for real to build its Paddle 2.6 venv."""
import importlib.util
import os
import subprocess
import sys
from typing import Dict, List

import pytest

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("setup_env", ROOT / "scripts" / "setup_env.py")
setup_env = importlib.util.module_from_spec(spec)
spec.loader.exec_module(setup_env)

#: what requirements.txt pins, as installed by it
PINNED = {"numpy": "2.4.6", "tqdm": "4.70.1", "pillow": "13.0.0", "matplotlib": "3.11.2", "scipy": "1.17.1",
          "opencv-python-headless": "5.0.0.93", "pyyaml": "6.0.3"}


class FakePip:
    """An environment (`installed`) that pip installs into, recording every call."""

    def __init__(self, installed: Dict[str, str], probe=None, fail: str = ""):
        self.installed, self.probe, self.fail = dict(installed), probe, fail
        self.calls: List[dict] = []

    def install(self, arguments) -> tuple:
        """pip install -r F... -c C: records the requirement and constraint lines, installs the
        requirements (those for this Python: the tests run on Python >= 3.11)."""
        call: dict = {"arguments": list(arguments), "-r": [], "-c": []}
        for flag, path in zip(arguments[::2], arguments[1::2]):
            call[flag] += [req.line for req in setup_env.read_requirements(path)]
        self.calls.append(call)
        if self.fail:
            return 1, self.fail
        for line in call["-r"]:
            if 'python_version < "3' not in line:
                version = line.split("==")[1].split(";")[0].strip() if "==" in line else "1.0"
                self.installed[setup_env.normalise(setup_env.names_of([line])[0])] = version
        return 0, ""


@pytest.fixture
def fake(monkeypatch):
    def make(installed: Dict[str, str], probe=None, fail: str = "") -> FakePip:
        pip = FakePip(installed, probe, fail)
        monkeypatch.setattr(setup_env, "installed_versions", lambda: dict(pip.installed))
        monkeypatch.setattr(setup_env, "probe_paddle", lambda timeout=0: pip.probe or (None, "no probe"))
        monkeypatch.setattr(setup_env, "pip_install", pip.install)
        return pip
    return make


def test_without_paddle_requirements_txt_is_installed_whole(fake):
    pip = fake({})
    code, line = setup_env.setup(dev=True)
    assert code == 0 and "no Paddle found" in line and "paddlepaddle 3.3.1" in line, line
    (call,) = pip.calls
    assert call["arguments"] == ["-r", str(ROOT / "requirements.txt"), "-r", str(ROOT / "requirements-dev.txt")]
    assert "paddlepaddle==3.3.1" in call["-r"] and "pytest" in setup_env.names_of(call["-r"])


def test_a_complete_environment_installs_nothing(fake):
    pip = fake({"paddlepaddle": "3.3.1", **PINNED}, probe=({"version": "3.3.1", "cuda": False, "gpus": []}, ""))
    code, line = setup_env.setup()
    assert code == 0 and pip.calls == []
    assert "found paddlepaddle 3.3.1 (CPU build), kept it" in line and "everything" in line, line


def test_paddle_2_gets_numpy_1_companions_and_is_never_touched(fake):
    """An AI Studio-like GPU image: Paddle 2.6 next to numpy 2 and the GUI OpenCV of a numpy-2 build;
    tqdm and PyYAML missing."""
    installed = {"paddlepaddle-gpu": "2.6.2.post120", "numpy": "2.1.0", "opencv-python": "4.12.0.88",
                 "pillow": "9.5.0", "matplotlib": "3.7.1", "scipy": "1.10.1"}
    probe = {"version": "2.6.2", "cuda": True, "cuda_version": "12.0", "gpus": ["Tesla V100-SXM2-32GB"]}
    pip = fake(installed, probe=(probe, ""))
    code, line = setup_env.setup()
    assert code == 0, line
    (call,) = pip.calls
    requested = setup_env.names_of([r for r in call["-r"] if r])
    assert sorted(set(requested)) == ["PyYAML", "numpy", "opencv-python", "tqdm"], requested
    assert not any(name.startswith("paddlepaddle") for name in requested)
    assert 'numpy==1.26.4; python_version >= "3.9"' in call["-r"] and "opencv-python==4.11.0.86" in call["-r"]
    assert "opencv-python-headless" not in " ".join(call["-r"]), "two OpenCV builds would share the cv2 module"
    assert {"paddlepaddle-gpu==2.6.2.post120", "pillow==9.5.0", "matplotlib==3.7.1", "scipy==1.10.1"} <= set(call["-c"])
    assert len(line.splitlines()) == 1
    assert "paddlepaddle-gpu 2.6.2.post120 (CUDA 12.0, GPU Tesla V100-SXM2-32GB), kept it" in line, line
    assert "numpy 1.26.4" in line and "tqdm 4.70.1" in line and "numpy 2.1.0 does not fit" in line, line


def test_paddle_3_keeps_the_installed_versions(fake):
    installed = {"paddlepaddle-gpu": "3.0.0", "numpy": "1.26.4", "opencv-python-headless": "4.10.0.84"}
    pip = fake(installed, probe=({"version": "3.0.0", "cuda": True, "cuda_version": "11.8", "gpus": []}, ""))
    code, line = setup_env.setup()
    (call,) = pip.calls
    requested = set(setup_env.names_of([r for r in call["-r"] if r]))
    assert code == 0 and requested == {"tqdm", "Pillow", "matplotlib", "scipy", "PyYAML"}, requested
    assert {"numpy==1.26.4", "opencv-python-headless==4.10.0.84", "paddlepaddle-gpu==3.0.0"} <= set(call["-c"])
    assert "CUDA 11.8, no GPU visible" in line, line


def test_a_broken_paddle_is_reported_and_kept(fake):
    pip = fake({"paddlepaddle-gpu": "2.6.2", **PINNED, "numpy": "1.26.4", "opencv-python-headless": "4.11.0.86"},
               probe=(None, "OSError: libcudnn.so.8: cannot open shared object file"))
    code, line = setup_env.setup()
    assert code == 0 and pip.calls == []
    assert "import paddle fails: OSError: libcudnn.so.8" in line and "kept it" in line, line


def test_a_pip_failure_is_one_line_and_an_error(fake, capsys):
    fake({"paddlepaddle": "3.3.1"}, probe=({"version": "3.3.1", "cuda": False, "gpus": []}, ""),
         fail="ERROR: No matching distribution found for tqdm==4.70.1")
    assert setup_env.main([]) == 1
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1 and "No matching distribution found for tqdm" in out, out


def test_dry_run_installs_nothing(fake):
    pip = fake({"paddlepaddle": "2.6.2"}, probe=({"version": "2.6.2", "cuda": False, "gpus": []}, ""))
    code, line = setup_env.setup(dry_run=True)
    assert code == 0 and pip.calls == [] and "would install numpy, tqdm" in line, line


def test_the_probe_reads_this_paddle():
    import paddle
    info, error = setup_env.probe_paddle()
    assert error == "" and info["version"] == paddle.__version__
    assert info["cuda"] == paddle.is_compiled_with_cuda()


def test_a_paddle_that_crashes_on_import_does_not_crash_the_tool(tmp_path, monkeypatch):
    (tmp_path / "paddle").mkdir()
    (tmp_path / "paddle" / "__init__.py").write_text("import os\nos.abort()\n")  # dies like a bad CUDA library
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    info, error = setup_env.probe_paddle()
    assert info is None and error


def test_the_tool_needs_nothing_but_the_standard_library():
    """It runs before anything is installed: start it with site-packages hidden (-S, -I)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-I", "-S", str(ROOT / "scripts" / "setup_env.py"), "--help"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0 and "--dev" in result.stdout, result.stderr
