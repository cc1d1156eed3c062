"""`msldm serve` / `bench --daemon` wiring and the bench library function (tiny sizes)."""

from __future__ import annotations

import argparse

import numpy as np

from server_fixtures import tiny_bundle  # noqa: F401
from server.bench import bench_server, format_table
from server.cli import add_bench_arguments, config_from_args, register


def test_serve_arguments_build_a_loopback_config(tiny_bundle, tmp_path):  # noqa: F811
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["serve", "--bundle", str(tiny_bundle), "--osc", "127.0.0.1:9000",
                              "--osc-input", str(tmp_path), "--osc-output", str(tmp_path),
                              "--max-region-seconds", "30"])
    cfg = config_from_args(args)
    assert cfg.zmq == "tcp://127.0.0.1:5555" and not cfg.allow_remote
    assert cfg.limits.max_region_seconds == 30 and cfg.osc_inputs == (tmp_path,)
    b = argparse.ArgumentParser()
    add_bench_arguments(b)
    assert b.parse_args(["--daemon"]).daemon_seconds == [12.0, 60.0]
    old = b.parse_args(["--server", "--server-seconds", "1.5", "--server-repeats", "2", "--server-steps", "4"])
    assert (old.daemon, old.daemon_seconds, old.daemon_repeats, old.daemon_steps) == (True, [1.5], 2, 4)
    assert old.daemon_candidates is None and b.parse_args(["--daemon-candidates", "1"]).daemon_candidates == 1


def test_bench_server_measures_both_paths(tiny_bundle):  # noqa: F811
    rows = bench_server(tiny_bundle, (1.5,), steps=2)
    r = rows[0]
    assert r.seconds == 1.5 and 0 < r.inproc_first <= r.inproc_total and 0 < r.daemon_first <= r.daemon_total
    assert r.pairs == 3 and np.isfinite(r.overhead_pct)
    assert "daemon overhead" in format_table(rows) and "daemon RTF" in format_table(rows)
    assert r.candidates == 2  # the handmade bundle's bass_drums_select, for the bench's bass and drums
    one = bench_server(tiny_bundle, (1.5,), steps=2, repeats=1, candidates=1)[0]
    assert one.candidates == 1 and format_table([one]).rstrip().endswith("| 1 |")


def test_bench_takes_times_one_request_against_separate_ones(tiny_bundle):  # noqa: F811
    from server.bench import bench_takes, format_takes
    row = bench_takes(tiny_bundle, 1.5, 3, repeats=1, steps=2)
    assert row.takes == 3 and row.one_request > 0 and row.separate > 0 and row.ratio > 0
    assert "| 1.5 | 3 |" in format_takes(row)


def test_serve_on_a_broken_bundle_says_why_and_exits_2(tmp_path, capsys):
    from server.cli import main
    (tmp_path / "manifest.json").write_text("{}")
    assert main(["serve", "--bundle", str(tmp_path)]) == 2
    assert "format_version" in capsys.readouterr().err


def test_keys_writes_a_loadable_pair_and_never_overwrites(tmp_path, capsys):
    """`msldm keys` (here `python -m server keys`): the pair `msldm serve --curve-secret-key`
    and `msldm-bridge --curve-*-key` read (fault 4 of issue 14)."""
    from server.cli import main
    from server.curve import load_public_key, load_secret_key
    assert main(["keys", "--dir", str(tmp_path), "--name", "studio"]) == 0
    out = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    assert out == {"public": str(tmp_path / "studio.key"), "secret": str(tmp_path / "studio.key_secret")}
    assert len(load_secret_key(tmp_path / "studio.key_secret")) == 40
    assert load_public_key(tmp_path / "studio.key") == load_public_key(tmp_path / "studio.key_secret")
    assert (tmp_path / "studio.key_secret").stat().st_mode & 0o077 == 0
    assert main(["keys", "--dir", str(tmp_path), "--name", "studio"]) == 2
    assert "not overwriting" in capsys.readouterr().err


def test_serve_curve_and_queue_share_arguments(tiny_bundle, tmp_path):  # noqa: F811
    from server.cli import main
    from server.curve import make_keys
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="cmd"))
    _, secret = make_keys(tmp_path, "server")
    args = parser.parse_args(["serve", "--bundle", str(tiny_bundle), "--curve-secret-key", str(secret),
                              "--curve-clients", str(tmp_path / "clients"), "--max-queue-per-client", "3"])
    cfg = config_from_args(args)
    assert cfg.curve_clients == tmp_path / "clients" and cfg.limits.per_client == 3
    assert cfg.curve_secret_key is not None and len(cfg.curve_secret_key) == 40
    assert main(["serve", "--bundle", str(tiny_bundle), "--curve-secret-key", str(tmp_path / "server.key")]) == 2
