"""Latent extraction: shapes, windowed = whole-track encoding, resume, statistics, chunks, CLI."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

import numpy as np
import pytest
import torch

from corpus_fixtures import SR, write_corpus
from msldm.checkpoint import save_checkpoint
from msldm.config import STEMS, get_preset
from msldm.data.cli_latents import add_latents_parser
from msldm.data.latents import LatentChunks, ResidentWindows, encode_track, extract_latents, latent_stats
from msldm.data.slakh import ActivityFilter, Track

torch.set_num_threads(1)  # the test machine is shared: threads only contend


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.manual_seed(0)
    base = tmp_path_factory.mktemp("latents")
    write_corpus(base / "data", {"train": 2, "validation": 1}, seconds=0.8, burst_threshold=0.7,
                 silent_piano_in_last_train=True)
    config = get_preset("tiny")
    from msldm.vae import SourceVAE
    vae = SourceVAE(config.vae).eval()
    ckpt = save_checkpoint(base / "vae.safetensors", "vae", config, vae)
    return {"base": base, "data": base / "data", "config": config, "vae": vae, "ckpt": ckpt}


def _cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    add_latents_parser(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(argv)
    args.func(args)


def test_cli_extracts_every_split_with_stats(setup: dict) -> None:
    out = setup["base"] / "lat"
    _cli(["latents", "--vae", str(setup["ckpt"]), "--data", str(setup["data"]), "--out", str(out),
          "--device", "cpu", "--batch", "3", "--window-frames", "16", "--no-progress"])
    index = json.loads((out / "index.json").read_text())
    C, D = setup["config"].vae.latent_dim, setup["config"].vae.hop
    T = -(-int(0.8 * SR) // D)
    assert index["stems"] == list(STEMS) and index["latent_dim"] == C and index["hop"] == D
    assert index["splits"] == {"train": {"Track00001": T, "Track00002": T},
                               "validation": {"Track00001": T}}
    z = np.load(out / "train" / "Track00001.npy")
    assert z.shape == (4, C, T) and z.dtype == np.float32
    rms = np.load(out / "train" / "Track00002.rms.npy")
    assert rms.shape == (4, T) and rms[3].max() == 0 and rms[0, :-1].min() > 0.1  # silent piano
    stats = json.loads((out / "stats.json").read_text())
    mean, std = np.array(stats["latent_mean"]), np.array(stats["latent_std"])
    np.testing.assert_allclose(std, np.array(stats["channel_std"]) / 0.4)
    zs = np.concatenate([np.load(out / "train" / f"Track0000{i}.npy") for i in (1, 2)], axis=2)
    normalised = (zs - mean[None, :, None]) / std[None, :, None]  # [K, C, T]
    per_channel = normalised.transpose(1, 0, 2).reshape(C, -1).std(axis=1)
    np.testing.assert_allclose(per_channel, 0.4, rtol=1e-3)


def test_windowed_encoding_matches_whole_track(setup: dict) -> None:
    vae = setup["vae"]
    audio = Track(setup["data"] / "train" / "Track00001").read()  # [K, N]
    windowed = encode_track(vae, audio, window_frames=8, context_frames=16, batch=5)
    with torch.no_grad():
        whole = vae.encode(torch.from_numpy(audio)[:, None])[0].numpy()  # [K, C, T]
    assert windowed.shape == whole.shape
    np.testing.assert_allclose(windowed, whole, atol=1e-4 * max(1.0, np.abs(whole).max()))


def test_resume_skips_written_tracks_and_rejects_another_vae(setup: dict) -> None:
    out = setup["base"] / "lat-resume"
    kw = dict(stems=STEMS, splits=("train",), batch=4, window_frames=32, progress=False,
              meta={"vae_sha256": "a"})
    extract_latents(setup["vae"], setup["data"], out, **kw)
    kept, redo = out / "train" / "Track00001.npy", out / "train" / "Track00002.npy"
    before = np.load(redo)
    os.utime(kept, ns=(1, 1))
    redo.unlink()
    extract_latents(setup["vae"], setup["data"], out, **kw)
    assert kept.stat().st_mtime_ns == 1 and redo.is_file()  # only the missing track redone
    np.testing.assert_array_equal(np.load(redo), before)
    assert not list(out.rglob("*.tmp*")) and not list(out.rglob(".*.part"))  # no temporary file left
    with pytest.raises(ValueError, match="made differently"):
        extract_latents(setup["vae"], setup["data"], out, **{**kw, "meta": {"vae_sha256": "b"}})


def test_extracting_another_split_keeps_the_earlier_ones_listed(setup: dict) -> None:
    out = setup["base"] / "lat-splits"
    kw = dict(stems=STEMS, batch=4, window_frames=32, progress=False)
    extract_latents(setup["vae"], setup["data"], out, splits=("train",), **kw)
    index = extract_latents(setup["vae"], setup["data"], out, splits=("validation",), **kw)
    assert set(index["splits"]) == {"train", "validation"}
    assert set(json.loads((out / "index.json").read_text())["splits"]) == {"train", "validation"}
    assert len(LatentChunks(out, "train", window_frames=8, hop_frames=8,
                            activity=ActivityFilter(threshold=0.0))) > 0


def test_latent_chunks_windows_stems_and_activity(setup: dict) -> None:
    out = setup["base"] / "lat"  # written by the CLI test
    if not (out / "index.json").is_file():
        pytest.skip("needs the CLI test's output")
    keep_all = ActivityFilter(threshold=0.0)
    ds = LatentChunks(out, "train", window_frames=16, hop_frames=8, activity=keep_all)
    T = json.loads((out / "index.json").read_text())["splits"]["train"]["Track00001"]
    per_track = (T - 16) // 8 + 1
    assert len(ds) == 2 * per_track and ds[0].shape == (4, 80, 16) and ds[0].dtype == torch.float32
    z = np.load(out / "train" / "Track00002.npy")
    t, start = ds.index[per_track + 1]
    np.testing.assert_array_equal(ds[per_track + 1].numpy(), z[:, :, start:start + 16])
    active = LatentChunks(out, "train", 16, 8)  # all four stems: track 2 (no piano) is dropped
    assert len(active) == per_track and {t for t, _ in active.index} == {0}
    bass = LatentChunks(out, "train", 16, 8, stems=("bass",))
    assert len(bass) == 2 * per_track and bass[0].shape == (1, 80, 16)
    np.testing.assert_array_equal(bass[0].numpy(), ds[0][:1].numpy())
    with pytest.raises(ValueError, match="no stems"):
        LatentChunks(out, "train", 16, stems=("mix",))
    assert latent_stats(out)["frames"] == 2 * 4 * T


def test_resident_windows_cut_the_same_batches(setup: dict) -> None:
    out = setup["base"] / "lat"  # written by the CLI test
    if not (out / "index.json").is_file():
        pytest.skip("needs the CLI test's output")
    ds = LatentChunks(out, "train", 16, 8, stems=("drums", "piano"), activity=ActivityFilter(threshold=0.0))
    ds.index = ds.index[1:-2]  # spans that start and end inside the tracks
    resident = ResidentWindows(ds, "cpu")
    assert len(resident) == len(ds)
    assert resident.data.shape[-1] < sum(json.loads((out / "index.json").read_text())["splits"]["train"].values())
    items = [len(ds) - 1, 0, 3, 3, len(ds) // 2]
    batch = resident.gather(items)
    assert batch.shape == (5, 2, 80, 16) and batch.dtype == torch.float32
    torch.testing.assert_close(batch, torch.stack([ds[i] for i in items]), rtol=0, atol=0)
    torch.testing.assert_close(resident[2], ds[2], rtol=0, atol=0)


def test_frame_share_keeps_windows_where_every_stem_plays_through() -> None:
    # Two stems, 12 frames; stem 1 sounds only in frames 0-3. Chunk RMS alone keeps every
    # 4-frame window that touches its notes; the frame-share rule keeps only windows where it
    # sounds in at least 75% of the frames.
    rms = np.full((2, 12), 0.1)
    rms[1, 4:] = 0.0
    starts = np.array([0, 2, 4, 8])
    rule = ActivityFilter(threshold=1e-3, min_frame_share=0.75)
    assert rule.keep_frames(rms, starts, 4, ("a", "b")).tolist() == [True, False, False, False]
    assert ActivityFilter().keep_frames(rms, starts, 4, ("a", "b")).all()  # off by default
    one = ActivityFilter(min_frame_share=0.75, min_active=1)
    assert one.keep_frames(rms, starts, 4, ("a", "b")).all()  # stem a plays through all of them
    # A share for one stem: b needs 25% (so it counts in the windows over frames 0-4), a keeps 75%.
    lenient = ActivityFilter(min_frame_share=0.75, stem_frame_share=(("b", 0.25),))
    assert lenient.keep_frames(rms, starts, 4, ("a", "b")).tolist() == [True, True, False, False]
    strict_a = ActivityFilter(stem_frame_share=(("b", 0.75),))  # only b is judged
    assert strict_a.keep_frames(rms, starts, 4, ("a", "b")).tolist() == [True, False, False, False]


def test_merge_latents_joins_folders_by_links_with_prefixed_names(setup: dict) -> None:
    from script_loader import load_script

    merge_latents = load_script("merge_latents")
    src = setup["base"] / "merge-src"
    _cli(["latents", "--vae", str(setup["ckpt"]), "--data", str(setup["data"]), "--out", str(src),
          "--device", "cpu", "--window-frames", "16", "--no-progress"])
    out = setup["base"] / "merged"
    counts = merge_latents.merge(out, [str(src), f"more:train={src}"])
    assert counts == {"train": 4, "validation": 1}
    index = json.loads((out / "index.json").read_text())
    assert sorted(index["splits"]["train"]) == ["Track00001", "Track00002", "more-Track00001", "more-Track00002"]
    assert (out / "stats.json").read_text() == (src / "stats.json").read_text()
    assert os.path.islink(out / "train" / "more-Track00002.npy")
    merged = LatentChunks(out, "train", 8)
    single = LatentChunks(src, "train", 8)
    assert len(merged) == 2 * len(single)
    np.testing.assert_array_equal(merged[len(single)].numpy(), single[0].numpy())
    other = setup["base"] / "merge-other"
    other.mkdir()
    (other / "index.json").write_text(json.dumps(dict(index, hop=index["hop"] * 2)))
    with pytest.raises(SystemExit, match="hop"):
        merge_latents.merge(setup["base"] / "merged-bad", [str(src), f"x:train={other}"])
    assert not (setup["base"] / "merged-bad").exists()  # checked before anything is written
    with pytest.raises(SystemExit, match="no index.json"):
        merge_latents.merge(setup["base"] / "merged-none", [str(src), str(setup["base"] / "nowhere")])
    with pytest.raises(SystemExit, match="prefix"):
        merge_latents.merge(setup["base"] / "merged-dup", [str(src), str(src)])
    from msldm.edm import EDMDenoiser

    C = setup["config"].vae.latent_dim
    mean, std = torch.linspace(-1, 1, C), torch.linspace(0.5, 2, C)
    ckpt = save_checkpoint(setup["base"] / "diffusion.safetensors", "diffusion", setup["config"],
                           EDMDenoiser(setup["config"].diffusion), {"latent_mean": mean, "latent_std": std})
    merge_latents.merge(setup["base"] / "merged-ckpt", [str(src)], stats_from=ckpt)
    from msldm.data.latents import load_stats
    stats = load_stats(setup["base"] / "merged-ckpt")
    torch.testing.assert_close(stats["latent_mean"], mean)
    torch.testing.assert_close(stats["latent_std"], std)


def test_packed_latents_unpack_to_the_trainers_windows_within_half_a_step(setup: dict) -> None:
    from script_loader import load_script

    from msldm.train.runs import diffusion_datasets

    pack_latents = load_script("pack_latents")
    assert pack_latents.spans([0, 4, 8, 20], 8) == [(0, 16), (20, 28)]
    src = setup["base"] / "pack-src"
    _cli(["latents", "--vae", str(setup["ckpt"]), "--data", str(setup["data"]), "--out", str(src),
          "--device", "cpu", "--window-frames", "16", "--no-progress"])
    config = dataclasses.replace(setup["config"], diffusion=dataclasses.replace(setup["config"].diffusion,
                                                                                 window_frames=8))
    activity = ActivityFilter(min_frame_share=0.6)
    windows = diffusion_datasets(config, src, activity)[0]  # the trainer's: hop 4 for W = 8
    assert len(windows) > len({t for t, _ in windows.index})  # tracks give overlapping windows
    packed, out = setup["base"] / "packed", setup["base"] / "unpacked"
    step = 0.05
    pack_latents.main(["pack", "--latents", str(src), "--out", str(packed), "--parts", "2",
                       "--window", "8", "--step", str(step)])
    pack_latents.main(["unpack", "--out", str(out), str(packed / "part0"), str(packed / "part1")])
    index = json.loads((out / "index.json").read_text())
    assert index["hop"] == json.loads((src / "index.json").read_text())["hop"]
    assert index["packed"]["hop"] == 4 and index["packed"]["filter"] == {"min_frame_share": 0.6}
    assert "validation" in index["splits"]
    unpacked = diffusion_datasets(config, out, activity)[0]
    std = np.asarray(json.loads((src / "stats.json").read_text())["latent_std"], np.float32)[:, None]
    source = {(windows.names[t], s): i for i, (t, s) in enumerate(windows.index)}
    seen = set()
    for j, (t, s) in enumerate(unpacked.index):  # every window again, each where it was
        track, _, offset = unpacked.names[t].rpartition("_at")
        key = (track, int(offset) + s)
        assert key in source and key not in seen
        seen.add(key)
        error = np.abs(unpacked[j].numpy() - windows[source[key]].numpy()) / std
        assert error.max() <= step / 2 + 1e-4
    assert len(seen) == len(source)
    other = setup["base"] / "packed-other"
    pack_latents.main(["pack", "--latents", str(src), "--out", str(other), "--parts", "1",
                       "--window", "8", "--min-frame-share", "0.3"])
    with pytest.raises(SystemExit, match="filter"):
        pack_latents.main(["unpack", "--out", str(setup["base"] / "mixed"), str(packed / "part0"),
                           str(other / "part0")])
    (other / "part0" / "header.json").unlink()  # what an interrupted pack leaves
    with pytest.raises(SystemExit, match="not a whole packed part"):
        pack_latents.main(["unpack", "--out", str(setup["base"] / "cut"), str(other / "part0")])
    assert not (setup["base"] / "cut" / "index.json").exists()
