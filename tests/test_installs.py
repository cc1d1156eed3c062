"""Each documented install starts its commands: simulated by blocking the modules that install
lacks in a fresh interpreter (nothing is installed or removed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVER_LACKS = ("torch", "mido", "scipy", "matplotlib", "safetensors", "onnx", "tensorboard", "librosa",
                "pedalboard", "mir_eval", "basic_pitch")
BRIDGE_LACKS = SERVER_LACKS + ("onnxruntime", "pythonosc", "soxr")

RUNNER = r'''
import importlib.abc, runpy, sys
blocked = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: not in this install)")
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[2:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
'''


def _run(blocked: tuple[str, ...], module: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUNNER, ",".join(blocked), module, *args],
                          capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.mark.parametrize("args", [("--help",), ("serve", "--help"), ("demo", "--help"), ("data", "synth", "--help")])
def test_server_install_starts_the_cli(args: tuple[str, ...]) -> None:
    out = _run(SERVER_LACKS, "msldm", *args)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage:" in out.stdout


def test_server_install_runs_the_demo(tmp_path: Path) -> None:
    out = _run(SERVER_LACKS, "msldm", "demo", "--out", str(tmp_path / "demo"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "demo" / "bass.wav").is_file() and (tmp_path / "demo" / "guitar.wav").is_file()


def test_bridge_install_starts_the_bridge() -> None:
    out = _run(BRIDGE_LACKS, "plugin_bridge.cli", "--help")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage:" in out.stdout
