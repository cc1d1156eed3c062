"""`msldm bench`: both backends in child processes, the table, the `--daemon` dispatch."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from msldm.bench import STAGES, bench, format_table, register


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path, Path]:
    from export.onnx_export import ExportOptions, export_bundle
    from export.parity import random_checkpoints

    root = tmp_path_factory.mktemp("bench")
    vae, diff = random_checkpoints("tiny", root / "ckpt")
    export_bundle(vae, diff, root / "bundle", ExportOptions(parity_frames=(4,), parity_steps=2))
    return root / "bundle", vae, diff


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    register(p.add_subparsers(dest="command"))
    return p


def test_bench_rows_for_both_backends(tiny):
    bundle, vae, diff = tiny
    rows = bench(bundle, vae, diff, seconds=0.5, steps=2, repeats=1, threads=1,
                 mallocs=("default", "tuned"))
    assert [(r["backend"], r["malloc"]) for r in rows] == [
        ("onnxruntime", "default"), ("onnxruntime", "tuned"), ("torch", "default"), ("torch", "tuned")]
    for r in rows:
        assert all(r[k] > 0 for k in STAGES)
        assert r["total"] == pytest.approx(r["encode"] + r["sample"] + r["decode"], rel=1e-6)
        assert r["frames"] == 36 and r["steps"] == 2  # ceil(0.5 * 22050 / 320) -> multiple of 2
    table = format_table(rows)
    assert table.count("\n| ") == 4 and "MALLOC_MMAP_MAX_=0" in table


def test_bundle_only_times_onnxruntime(tiny, capsys):
    args = _parser().parse_args(["bench", "--bundle", str(tiny[0]), "--seconds", "0.3",
                                 "--steps", "1", "--repeats", "1", "--malloc", "tuned"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "onnxruntime" in out and "| torch" not in out and "onnxruntime only" in out
    assert "machine: " in out and "GFLOP/s" in out


def test_spin_both_gives_onnxruntime_a_row_each(tiny, capsys):
    args = _parser().parse_args(["bench", "--bundle", str(tiny[0]), "--seconds", "0.3", "--steps", "1",
                                 "--repeats", "1", "--malloc", "default", "--spin", "both"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| onnxruntime")]
    assert [row.split(" | ")[2] for row in rows] == ["off", "on"]


def test_machine_speed_is_a_positive_figure():
    from msldm.bench import format_machine, machine_speed

    m = machine_speed(repeats=2, n=128)
    assert m["matmul_gflops"] > 0 and m["cores"] >= 1 and m["cpu"]
    assert f"{m['cores']} cores" in format_machine(m)


def test_half_given_checkpoints_is_an_error(tiny):
    args = _parser().parse_args(["bench", "--bundle", str(tiny[0]), "--vae", str(tiny[1])])
    with pytest.raises(ValueError, match="both"):
        args.func(args)


@pytest.mark.parametrize("flag", ["--daemon", "--server"])  # --server: its old, hidden name
def test_daemon_flag_dispatches_to_the_server_bench(monkeypatch, flag):
    import server.cli
    seen = {}
    monkeypatch.setattr(server.cli, "run_bench", lambda a: seen.setdefault("args", a) and 0)
    args = _parser().parse_args(["bench", flag, "--bundle", "x"])
    args.func(args)
    assert seen["args"].daemon is True


def test_bench_help_names_daemon_not_server(capsys):
    """`--server` is an address in msldm-bridge; in bench the daemon benchmark is `--daemon`."""
    with pytest.raises(SystemExit):
        _parser().parse_args(["bench", "--help"])
    out = capsys.readouterr().out
    assert "--daemon" in out and "--daemon-seconds" in out and "--server" not in out
