"""scripts/rebuild_cache.sh relatents: each corpus rendered again where its audio is gone,
encoded by the given SourceVAE into tagged folders, pruned before the next; the bundled VAE's
latents untouched. The renderer and encoder are stand-ins that log their calls."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAKE = """#!/usr/bin/env bash
echo "$*" >> "$LOG"
out=""; prev=""
for a in "$@"; do [ "$prev" = --out ] && out=$a; prev=$a; done
case "$1 $2" in
  "data synth") mkdir -p "$out/train/Track00001"
                cd "$(dirname "$out")" && echo "audio: $(ls -d */train | tr '\\n' ' ')" >> "$LOG" ;;
  "data latents") mkdir -p "$out"; touch "$out/index.json" ;;
  *) mkdir -p "$out" ;;
esac
"""


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_relatents_renders_encodes_and_prunes_one_corpus_at_a_time(tmp_path: Path) -> None:
    fake = tmp_path / "fake"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    data = tmp_path / "data"
    data.mkdir()
    for corpus in ("full", "full2", "full3", "multi"):
        (data / f".done-{corpus}-train").touch()  # rendered once, the plays-through audio pruned since
    (data / "multi" / "train").mkdir(parents=True)
    (data / "full-latents").mkdir()
    (data / "full-latents" / "kept").touch()
    log = tmp_path / "log"
    env = {**os.environ, "MSLDM": str(fake), "PY": str(fake), "DATA": str(data), "LOG": str(log),
           "VAE": "new.safetensors", "MIN_FREE_GB": "0"}
    script = ROOT / "scripts" / "rebuild_cache.sh"
    untagged = subprocess.run(["bash", str(script), "relatents"], env=env, capture_output=True, text=True)
    assert untagged.returncode != 0 and "TAG" in untagged.stderr  # never over the bundled VAE's latents
    run = subprocess.run(["bash", str(script), "relatents"], env={**env, "TAG": "-v2"},
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    calls = log.read_text().splitlines()
    synths = [c for c in calls if c.startswith("data synth")]
    outs = [c.split("--out ")[1].split()[0] for c in synths]
    assert outs == [str(data / d) for d in ("full", "full2", "full3")]
    latents = [c for c in calls if c.startswith("data latents")]
    assert all("--vae new.safetensors" in c for c in latents)
    assert [c.split("--out ")[1].split()[0] for c in latents] == [
        str(data / f"{d}-latents-v2") for d in ("full", "full2", "full3", "multi")]
    # pruned before the next render: beside the 10-hour corpus, one corpus's audio at a time
    held = [set(c.split()[1:]) for c in calls if c.startswith("audio:")]
    assert held == [{"multi/train", f"{d}/train"} for d in ("full", "full2", "full3")]
    assert not any((data / d / "train").exists() for d in ("full", "full2", "full3"))
    assert (data / "multi" / "train").is_dir()  # the VAE trains on it: kept
    assert (data / "full-latents" / "kept").exists() and (data / ".done-mix6-v2").exists()
    merge = [c for c in calls if "merge_latents.py" in c]
    assert len(merge) == 1 and "mix6-latents-v2" in merge[0] and "multi-latents-v2" in merge[0]
    again = subprocess.run(["bash", str(script), "relatents"], env={**env, "TAG": "-v2"},
                           capture_output=True, text=True)
    assert again.returncode == 0 and len(log.read_text().splitlines()) == len(calls)  # all done before
