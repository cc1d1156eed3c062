"""The torch-free bundle runtime and the windowing of long regions."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from server_fixtures import C, HOP, SIGMA_DATA, WINDOW, tiny_bundle  # noqa: F401  (fixture)
from server.audio import StreamRateConverter, convert_rate, exact_length, to_mono
from msldm.config import MAX_SELECT
from server.runtime import Bundle, BundleError
from server.windowing import EncodeCache, Timings, WindowPlan, default_overlap, generate_region

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle(tiny_bundle):  # noqa: F811
    return Bundle.load(tiny_bundle)


def test_server_never_imports_torch(tiny_bundle):  # noqa: F811
    code = ("import sys; import server.daemon, server.cli, server.bench, server.osc_front; "
            "from server.runtime import Bundle; Bundle.load(sys.argv[1]); "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code, str(tiny_bundle)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_load_reports_real_providers_quietly(tiny_bundle, capfd):  # noqa: F811
    b = Bundle.load(tiny_bundle)
    out, err = capfd.readouterr()
    assert "EP Error" not in out + err and "Failed to load library" not in out + err
    assert set(b.providers) == {"encoder", "denoiser", "decoder"}
    for p in b.providers.values():
        assert p.endswith("ExecutionProvider")
    assert (b.K, b.C, b.D, b.window_frames) == (4, C, HOP, WINDOW)


def test_sessions_do_not_spin_between_runs_unless_asked(tiny_bundle, monkeypatch):  # noqa: F811
    import server.runtime as runtime

    def spinning(b: Bundle) -> set[str]:
        def entry(opts) -> str:
            try:
                return opts.get_session_config_entry("session.intra_op.allow_spinning")
            except Exception:  # not set: onnxruntime's default (spinning)
                return "default"
        return {entry(s.get_session_options()) for s in b.sessions.values()}

    assert spinning(Bundle.load(tiny_bundle, threads=2, warmup=False)) == {"0"}
    monkeypatch.setattr(runtime, "SPIN", True)
    assert spinning(Bundle.load(tiny_bundle, threads=2, warmup=False)) == {"default"}


def test_hash_mismatch_is_refused(tiny_bundle, tmp_path):  # noqa: F811
    bad = tmp_path / "b"
    shutil.copytree(tiny_bundle, bad)
    with open(bad / "decoder.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="sha256"):
        Bundle.load(bad)
    m = json.loads((bad / "manifest.json").read_text())
    m["format_version"] = 99
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="format_version"):
        Bundle.load(bad)


def _bundle_with_sampler(tiny_bundle: Path, root: Path, **fields) -> Path:
    """A copy of the tiny bundle whose manifest's sampler block has `fields` set."""
    if not root.exists():
        shutil.copytree(tiny_bundle, root)
    m = json.loads((root / "manifest.json").read_text())
    m["sampler"].update(fields)
    (root / "manifest.json").write_text(json.dumps(m))
    return root


def test_manifest_schedule_is_the_default_and_checked(tiny_bundle, tmp_path):  # noqa: F811
    from msldm import sampling
    b = Bundle.load(_bundle_with_sampler(tiny_bundle, tmp_path / "b", schedule="melody"))
    assert b.sigmas(6) == sampling.melody_sigmas(6, 0.01, 3.0, SIGMA_DATA)
    assert b.sigmas(6, "karras") == sampling.karras_sigmas(6, 0.01, 3.0, 7.0)
    for bad in ({"schedule": "cosine"}, {"schedule": "karras", "resample": 0}):
        with pytest.raises(BundleError, match="resample" if "resample" in bad else "schedule"):
            Bundle.load(_bundle_with_sampler(tiny_bundle, tmp_path / "b", **bad))


def test_manifest_sampler_block_is_complete_or_refused(tiny_bundle, tmp_path):  # noqa: F811
    # One source of truth: the block is SamplerConfig's fields, every one written; a missing or
    # unknown field is refused by name rather than filled with a default nobody chose.
    from msldm.config import SamplerConfig
    from export.manifest import ManifestError, verify_bundle

    b = Bundle.load(tiny_bundle)
    assert isinstance(b.sampler_defaults, SamplerConfig) and b.sampler_defaults.S_tmax == float("inf")
    root = _bundle_with_sampler(tiny_bundle, tmp_path / "m")
    m = json.loads((root / "manifest.json").read_text())
    del m["sampler"]["S_churn"]
    m["sampler"]["churn"] = 3.0
    (root / "manifest.json").write_text(json.dumps(m))
    for load in (Bundle.load, verify_bundle):
        with pytest.raises((BundleError, ManifestError), match=r"missing \['S_churn'\], unknown \['churn'\]"):
            load(root)
    # a field added after bundles were first written loads, when absent, as what they sampled with
    m["sampler"]["S_churn"] = m["sampler"].pop("churn")
    assert m["sampler"].pop("resample_tmin") == 0.0 and m["sampler"].pop("resample_tmax") is None
    (root / "manifest.json").write_text(json.dumps(m))
    d = Bundle.load(root).sampler_defaults
    assert d.resample_tmin == 0.0 and d.resample_tmax == float("inf")
    m["sampler"].update(resample_tmin=0.1, resample_tmax=0.3)
    (root / "manifest.json").write_text(json.dumps(m))
    d = Bundle.load(root).sampler_defaults
    assert (d.resample_tmin, d.resample_tmax) == (0.1, 0.3)
    # S_churn_total: absent or null is total generation with S_churn, as bundles before it sampled
    for field in ("S_churn_total", "S_tmax_total"):
        m["sampler"].pop(field, None)  # (the hand-built bundle predates them, as old bundles do)
        (root / "manifest.json").write_text(json.dumps(m))
        assert getattr(Bundle.load(root).sampler_defaults, field) is None
        for value in (None, 2.5):
            m["sampler"][field] = value
            (root / "manifest.json").write_text(json.dumps(m))
            assert getattr(Bundle.load(root).sampler_defaults, field) == value
    # the given-bass fields: absent, no such sampler (bundles before them had none in the manifest)
    for field in ("bass_given_reconstruction", "bass_given_resample", "bass_drums_reconstruction_tmin",
                  "bass_drums_select", "pull_resample", "pull_steps", "harmony_given_guidance",
                  "harmony_given_resample"):
        m["sampler"].pop(field, None)
    (root / "manifest.json").write_text(json.dumps(m))
    d = Bundle.load(root).sampler_defaults
    assert (d.bass_given_reconstruction, d.bass_given_resample, d.bass_drums_reconstruction_tmin,
            d.bass_drums_select, d.pull_resample, d.pull_steps, d.harmony_given_guidance,
            d.harmony_given_resample) == (0.0, 0, None, 1, 2, 0.6, 1.0, 0)
    del m["provenance"]
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="provenance"):  # the exporter's required fields are the runtime's
        Bundle.load(root)


def test_manifest_total_churn_sets_total_generation_and_a_request_churn_sets_both(tiny_bundle, tmp_path):  # noqa: F811
    b = Bundle.load(_bundle_with_sampler(tiny_bundle, tmp_path / "c", S_churn=5.0, S_tmin=0.0, S_tmax=None,
                                         S_churn_total=0.0, S_tmax_total=1.0))
    T, shape = 8, (1, 4 * C, 8)
    given, mask = np.zeros(shape, np.float32), b.stem_mask(["bass"], T)

    def gen(**kw) -> np.ndarray:
        return b.generate(shape, seed=3, steps=4, **kw)

    assert np.array_equal(gen(), gen(S_churn=0.0))  # total generation: the manifest's S_churn_total
    assert not np.array_equal(gen(), gen(S_churn=5.0))  # a request's churn is total generation's too
    assert np.array_equal(gen(given=given, mask=mask), gen(given=given, mask=mask, S_churn=5.0))
    assert not np.array_equal(gen(given=given, mask=mask), gen(given=given, mask=mask, S_churn=0.0))
    # a total generation's later window continues the one before through a mask: still total
    assert np.array_equal(gen(given=given, mask=mask, total=True), gen(given=given, mask=mask, S_churn=0.0))


def test_manifest_resample_applies_to_partial_generation_only(tiny_bundle, tmp_path):  # noqa: F811
    b = Bundle.load(_bundle_with_sampler(tiny_bundle, tmp_path / "r", resample=3))
    calls = []
    denoise = b.denoise
    b.denoise = lambda x, s: calls.append(s) or denoise(x, s)
    T = 8
    given, mask = np.zeros((1, 4 * C, T), np.float32), b.stem_mask(["bass"], T)
    for kwargs, n in (({"given": given, "mask": mask}, 3 * 4), ({"given": given, "mask": mask, "resample": 1}, 4),
                      ({}, 4)):  # the last: total generation, nothing to fit to
        calls.clear()
        b.generate((1, 4 * C, T), seed=0, steps=4, **kwargs)
        assert len(calls) == n, kwargs


def test_graph_shapes_and_padding(bundle):
    audio = np.random.default_rng(0).standard_normal((2, 1, 1000)).astype(np.float32)
    z = bundle.encode(audio)
    assert z.shape == (2, C, 4)  # ceil(1000 / 320)
    assert bundle.decode(z).shape == (2, 1, 4 * HOP)
    x = np.ones((1, 4 * C, 8), np.float32)
    np.testing.assert_allclose(bundle.denoise(x, 0.3), x * SIGMA_DATA ** 2 / (0.09 + SIGMA_DATA ** 2), rtol=1e-6)


def test_partial_generation_keeps_given_and_is_seeded(bundle):
    T = 8
    mask = bundle.stem_mask(["bass"], T)
    given = np.random.default_rng(1).standard_normal((1, 4 * C, T)).astype(np.float32)
    a = bundle.generate((1, 4 * C, T), seed=3, given=given, mask=mask)
    b = bundle.generate((1, 4 * C, T), seed=3, given=given, mask=mask)
    c = bundle.generate((1, 4 * C, T), seed=4, given=given, mask=mask)
    np.testing.assert_array_equal(a[:, :C], given[:, :C])
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[:, C:], c[:, C:])


def test_guided_generation_batches_both_branches_into_one_call(bundle, monkeypatch):
    """With guidance the runtime runs a guided call's two denoiser evaluations as one call on
    twice the rows; the result is the two-call sampler's up to a batched call's float rounding."""
    from msldm import sampling

    T, takes = 8, 2
    mask = bundle.stem_mask(["bass", "drums"], T)
    given = np.repeat(np.random.default_rng(1).standard_normal((1, 4 * C, T)).astype(np.float32), takes, axis=0)
    rows = []
    real = bundle.denoise
    monkeypatch.setattr(bundle, "denoise", lambda x, s, *cond: rows.append(x.shape[0]) or real(x, s, *cond))
    one = bundle.generate((takes, 4 * C, T), seed=3, given=given, mask=mask, guidance=3.0)
    assert 2 * takes in rows and set(rows) <= {takes, 2 * takes}
    plain = sampling.generate
    monkeypatch.setattr(sampling, "generate", lambda *a, **k: plain(*a, **{**k, "concat": None}))
    rows.clear()
    two = bundle.generate((takes, 4 * C, T), seed=3, given=given, mask=mask, guidance=3.0)
    assert set(rows) == {takes}
    np.testing.assert_allclose(one, two, rtol=0, atol=1e-5)
    assert not np.allclose(one, bundle.generate((takes, 4 * C, T), seed=3, given=given, mask=mask))


def test_window_plan_covers_the_region():
    plan = WindowPlan(frames=160, window=64, overlap=16)
    assert plan.starts == [0, 48, 96]
    assert plan.padded_frames >= 160
    assert WindowPlan(10, 64, 16).starts == [0]
    assert default_overlap(64) == 16


def test_region_continues_across_windows(bundle, monkeypatch):
    """Every window after the first gets the previous window's last O generated frames imposed."""
    seen = []
    real = bundle.generate

    def spy(shape, **kw):
        out = real(shape, **kw)
        seen.append((kw.get("given"), kw.get("mask"), out))
        return out

    monkeypatch.setattr(bundle, "generate", spy)
    n = int(2.5 * WINDOW * HOP)
    bass = np.random.default_rng(2).standard_normal(n).astype(np.float32) * 0.1
    pieces = list(generate_region(bundle, {"bass": bass}, ["drums", "piano"], n, seed=1))
    O = default_overlap(WINDOW)
    assert len(seen) == len(pieces) == 3
    for (_, _, prev), (given, mask, cur) in zip(seen, seen[1:]):
        for k in (1, 3):  # drums, piano blocks
            blk = slice(k * C, (k + 1) * C)
            assert mask[0, blk, :O].all() and not mask[0, blk, O:].any()
            np.testing.assert_array_equal(cur[0, blk, :O], prev[0, blk, WINDOW - O:])
        assert mask[0, :C].all()  # bass given everywhere
    starts = [p.start for p in pieces]
    lengths = [len(p.stems["drums"]) for p in pieces]
    assert starts == list(np.cumsum([0] + lengths[:-1])) and sum(lengths) == n
    assert [p.last for p in pieces] == [False, False, True]


class _CountingBundle:
    """Stands in for a Bundle's encoder: one latent row per audio row, and a call log."""

    def __init__(self):
        self.calls = []

    def encode(self, audio):
        self.calls.append(len(audio))
        return np.repeat(audio[:, :, ::4].sum(axis=2, keepdims=True), 3, axis=1)  # [G,3,1]


def test_encode_cache_encodes_only_new_rows_in_order_and_evicts_oldest():
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal((1, 1, 64)).astype(np.float32) for _ in range(3))
    fake, cache = _CountingBundle(), EncodeCache(max_bytes=2 * 3 * 4)  # room for two [3,1] latents
    ab = cache.encode(fake, np.concatenate([a, b]))
    np.testing.assert_array_equal(ab, fake.encode(np.concatenate([a, b])))
    fake.calls.clear()
    ba = cache.encode(fake, np.concatenate([b, a]))  # both cached, asked in the other order
    np.testing.assert_array_equal(ba, ab[::-1])
    assert fake.calls == [] and (cache.hits, cache.misses) == (2, 2)
    cache.encode(fake, np.concatenate([c, a]))  # c is new: only it is encoded; b is evicted (oldest)
    assert fake.calls == [1] and len(cache.store) == 2
    cache.encode(fake, b)
    assert fake.calls == [1, 1]
    shorter = np.ascontiguousarray(a[:, :, :32])  # same leading samples, other length: another key
    cache.encode(fake, shorter)
    assert fake.calls == [1, 1, 1]
    tight = EncodeCache(max_bytes=3 * 4)  # room for one latent, asked for three (two the same)
    rows = np.concatenate([a, b, a])
    np.testing.assert_array_equal(tight.encode(fake, rows), fake.encode(rows))
    assert len(tight.store) == 1 and tight.bytes == 3 * 4
    off = EncodeCache(max_bytes=0)
    off.encode(fake, a)
    off.encode(fake, a)
    assert fake.calls[-2:] == [1, 1] and not off.store


def test_every_window_of_a_total_generation_samples_as_total(bundle, monkeypatch):
    """Nothing given across stems: each window, the later ones continued through a mask too,
    gets the manifest's total-generation churn (`S_churn_total`); given stems: none does."""
    seen, real = [], bundle.generate

    def spy(shape, **kw):
        seen.append((kw.get("total"), kw.get("mask") is not None))
        return real(shape, **kw)

    monkeypatch.setattr(bundle, "generate", spy)
    n = int(2.5 * WINDOW * HOP)
    list(generate_region(bundle, {}, ["drums", "piano"], n, seed=1, steps=2))
    assert seen == [(True, False), (True, True), (True, True)]
    seen.clear()
    bass = np.random.default_rng(2).standard_normal(n).astype(np.float32) * 0.1
    list(generate_region(bundle, {"bass": bass}, ["drums", "piano"], n, seed=1, steps=2))
    assert seen == [(False, True)] * 3


def test_region_with_cache_equals_region_without(bundle):
    n = int(2.5 * WINDOW * HOP)
    rng = np.random.default_rng(5)
    given = {s: (0.1 * rng.standard_normal(n)).astype(np.float32) for s in ("bass", "piano")}

    def run(seed, cache):
        return np.concatenate([p.stems["drums"] for p in generate_region(
            bundle, given, ["drums"], n, seed=seed, steps=3, cache=cache)])

    cache = EncodeCache()
    first = run(1, cache)
    assert cache.hits == 0 and cache.misses == 2 * 3  # 2 given stems x 3 windows
    again = run(2, cache)
    assert cache.hits == 6 and cache.misses == 6
    np.testing.assert_array_equal(again, run(2, None))
    assert not np.array_equal(first, again)


def test_rate_conversion_lengths_are_exact():
    x = np.random.default_rng(0).standard_normal(22050).astype(np.float32)
    assert len(convert_rate(x, 22050, 48000)) == exact_length(22050, 22050, 48000) == 48000
    st = StreamRateConverter(22050, 48000, 48000)
    parts = [st.push(x[:7000]), st.push(x[7000:15000]), st.push(x[15000:], last=True)]
    y = np.concatenate(parts)
    assert len(y) == 48000
    np.testing.assert_allclose(y[1000:-1000], convert_rate(x, 22050, 48000)[1000:-1000], atol=1e-3)
    assert to_mono(np.ones((5, 2), np.float32) * [1, 0]).tolist() == [0.5] * 5


def test_eval_generator_runs_the_bundle_on_the_threads_it_is_given(tiny_bundle):  # noqa: F811
    # `msldm eval --threads 1` must really hold every graph to one thread (an eval beside a
    # 1-thread training run on 2 cores); 0 leaves onnxruntime's default
    from msldm.eval.generators import BundleGenerator

    one = BundleGenerator(tiny_bundle, threads=1).bundle.sessions
    assert set(one) == {"encoder", "denoiser", "decoder"}
    assert {s.get_session_options().intra_op_num_threads for s in one.values()} == {1}
    default = BundleGenerator(tiny_bundle).bundle.sessions
    assert {s.get_session_options().intra_op_num_threads for s in default.values()} == {0}


def _silent_unless_positive(bundle, monkeypatch, every: int = 3, row: int = 1):
    """Make the tiny bundle's decoder play a loud tone for every block but rows `row` (mod
    `every`) whose mean latent is <= 0, which it makes silent: with the stems asked for in the
    order drums, guitar, piano, a model whose guitar is empty half the time."""
    assert not bundle.phase_bins

    def decode(z):
        n = z.shape[-1] * bundle.D
        tone = (0.3 * np.sin(0.05 * np.arange(n))).astype(np.float32)
        return np.stack([[np.zeros(n, np.float32) if j % every == row and blk.mean() <= 0 else tone]
                         for j, blk in enumerate(z)])

    monkeypatch.setattr(bundle, "decode", decode)


def _run_region(bundle, given, n, seed, retries, takes=1, timings=None):
    from server.windowing import Timings

    t = Timings() if timings is None else timings
    pieces = list(generate_region(bundle, given, ["drums", "guitar", "piano"], n, seed=seed, steps=2,
                                  timings=t, silent_retries=retries, takes=takes))
    return pieces, t.rerolls_total


def _silent_pieces(pieces) -> int:
    """Pieces whose guitar is silent after the crossfade from the window before (the fake
    decoder's blocks are all tone or all silence)."""
    L = default_overlap(WINDOW) * HOP
    return sum(not np.abs(p.stems["guitar"][L:]).max() > 0 for p in pieces if len(p.stems["guitar"]) > L)


def test_a_window_with_a_silent_generated_stem_is_sampled_again(bundle, monkeypatch):
    _silent_unless_positive(bundle, monkeypatch)
    n = int(3.5 * WINDOW * HOP)
    given = {"bass": (0.1 * np.random.default_rng(0).standard_normal(n)).astype(np.float32)}
    silent = {0: 0, 4: 0}
    for seed in range(8):
        plain, none = _run_region(bundle, given, n, seed, 0)
        guarded, rerolls = _run_region(bundle, given, n, seed, 4)
        assert none == 0
        silent[0] += _silent_pieces(plain)
        silent[4] += _silent_pieces(guarded)
        if _silent_pieces(plain) == 0:  # nothing to redo: the same audio, no extra sampling
            assert rerolls == 0
            for a, b in zip(plain, guarded):
                for s in a.stems:
                    np.testing.assert_array_equal(a.stems[s], b.stems[s])
        else:
            assert rerolls > 0
        assert [len(p.stems["drums"]) for p in plain] == [len(p.stems["drums"]) for p in guarded]
    # a guitar silent in about 2 of 3 windows at first (21 of 32 here); with 4 retries (2/3)^5 of them
    assert silent[0] >= 12 and silent[4] <= silent[0] // 3, silent


def test_silent_rerolls_keep_every_take_equal_to_its_one_take_request(bundle, monkeypatch):
    _silent_unless_positive(bundle, monkeypatch)
    n = int(2.5 * WINDOW * HOP)
    given = {"bass": (0.1 * np.random.default_rng(1).standard_normal(n)).astype(np.float32)}
    _takes_match_one_take_requests(bundle, given, n)


def _takes_match_one_take_requests(bundle, given, n):
    from server.windowing import Timings

    t = Timings()
    batch = list(generate_region(bundle, given, ["drums", "guitar", "piano"], n, seed=10, steps=2, timings=t,
                                 silent_retries=2, takes=3))
    assert t.rerolls_total > 0
    for b in range(3):  # each take: the audio and the retries of a one-take request with its seed
        alone, r = _run_region(bundle, given, n, 10 + b, 2)
        assert t.rerolls.get(b, 0) == r
        mine = [p for p in batch if p.take == b]
        for a, p in zip(alone, mine):
            for s in a.stems:
                np.testing.assert_allclose(p.stems[s], a.stems[s], atol=1e-4)


def test_silent_rerolls_keep_takes_equal_with_a_phase_carrying_decoder(bundle, monkeypatch):
    # the spectral decoder carries phase from window to window; a retried take must start
    # from its own phase and hand its own on: a fake decoder whose audio depends on it
    F = 3
    calls = []

    def decode_carry(self, z, offset):
        calls.append((z.copy(), offset.copy()))
        n = z.shape[-1] * self.D
        ramp = np.arange(n, dtype=np.float32)
        audio = [np.zeros(n, np.float32) if j % 3 == 1 and blk.mean() <= 0
                 else (0.3 * np.sin(0.05 * ramp + off[0])).astype(np.float32) for j, (blk, off) in
                 enumerate(zip(z, offset))]
        offsets = offset[:, :, None] + np.cumsum(z[:, :F], axis=-1)  # [B,F,W]
        return np.stack(audio)[:, None], offsets.astype(np.float32)

    monkeypatch.setattr(Bundle, "phase_bins", property(lambda self: F))
    monkeypatch.setattr(Bundle, "decode_carry", decode_carry)
    n = int(3.5 * WINDOW * HOP)
    given = {"bass": (0.1 * np.random.default_rng(4).standard_normal(n)).astype(np.float32)}
    _takes_match_one_take_requests(bundle, given, n)
    # every block starts at the phase the kept attempt of its window before handed on: that
    # attempt is the block whose last O frames this block continues (imposed exactly)
    O, hop = default_overlap(WINDOW), WINDOW - default_overlap(WINDOW)
    blocks = [(blk, off, out) for z, offset in calls for blk, off, out in
              zip(z, offset, offset[:, :, None] + np.cumsum(z[:, :F], axis=-1))]
    checked = 0
    for blk, off, _ in blocks:
        before = [o for b2, _, o in blocks if np.array_equal(b2[:, WINDOW - O:], blk[:, :O])]
        if before:
            checked += 1
            assert any(np.allclose(off, o[:, hop], atol=1e-5) for o in before)
    assert checked >= 10


def test_no_reroll_where_the_given_stems_rest_or_for_a_redone_stem(bundle, monkeypatch):
    _silent_unless_positive(bundle, monkeypatch, every=1, row=0)  # any block may be silent
    n = int(2.5 * WINDOW * HOP)
    quiet = {"bass": np.zeros(n, np.float32)}  # the given part rests: a resting answer may be right
    assert all(_run_region(bundle, quiet, n, seed, 2)[1] == 0 for seed in range(4))
    F = -(-n // HOP)
    kept = {"drums": np.arange(F) < F // 2}
    loud = {"bass": (0.1 * np.random.default_rng(2).standard_normal(n)).astype(np.float32),
            "drums": np.zeros(n, np.float32)}
    from server.windowing import Timings
    for seed in range(4):
        t = Timings()
        list(generate_region(bundle, loud, ["drums"], n, seed=seed, steps=2, timings=t, kept_frames=kept))
        assert t.rerolls_total == 0


def test_a_window_sampled_again_adds_churn_at_every_noise_level(bundle, monkeypatch):
    # the retry samples with S_tmin 0 (churn at every noise level: on the bundled model the
    # setting that left no guitar empty), the first attempt with the bundle's own
    from server.windowing import REROLL_S_TMIN

    _silent_unless_positive(bundle, monkeypatch)
    seen, real = [], bundle.generate

    def spy(*args, **kw):
        seen.append(kw.get("S_tmin"))
        return real(*args, **kw)

    monkeypatch.setattr(bundle, "generate", spy)
    n = int(2.5 * WINDOW * HOP)
    given = {"bass": (0.1 * np.random.default_rng(3).standard_normal(n)).astype(np.float32)}
    rerolls = sum(_run_region(bundle, given, n, seed, 2)[1] for seed in range(4))
    assert REROLL_S_TMIN == 0.0 and rerolls > 0
    assert seen.count(None) == 4 * 3 and seen.count(REROLL_S_TMIN) >= 1  # 4 regions x 3 windows first
    assert len(seen) == seen.count(None) + seen.count(REROLL_S_TMIN)


def _spy_generate(bundle, m):
    """Record (S_tmin, steps, resample) of every `bundle.generate` call."""
    seen, real = [], bundle.generate

    def spy(*args, **kw):
        seen.append((kw.get("S_tmin"), kw.get("steps"), kw.get("resample")))
        return real(*args, **kw)

    m.setattr(bundle, "generate", spy)
    return seen


def test_a_quiet_window_is_sampled_again_with_the_pulling_sampler_a_blown_one_as_asked(bundle, monkeypatch):
    # more RePaint passes over fewer steps (about the same calls) pull a quiet generated part
    # towards the given one and up in level; a burst is sampled again as the request asked
    import dataclasses

    n = int(2.5 * WINDOW * HOP)
    given = {"bass": (0.1 * np.random.default_rng(3).standard_normal(n)).astype(np.float32)}
    d = bundle.sampler_defaults  # the manifest's pulling sampler (the tiny bundle's: the fields' defaults)
    assert (d.pull_resample, d.pull_steps) == (2, 0.6)
    pulled = (max(2, round(5 * d.pull_steps)), min(8, 3 * d.pull_resample))
    assert pulled == (3, 6)
    for make_fail, want in ((_silent_unless_positive, {pulled}), (_blown_unless_positive, {(5, 3)})):
        with monkeypatch.context() as m:
            make_fail(bundle, m)
            seen = _spy_generate(bundle, m)
            for seed in range(4):
                list(generate_region(bundle, given, ["drums", "guitar", "piano"], n, seed=seed, steps=5,
                                     resample=3, silent_retries=2))
            retries = {(st, r) for t, st, r in seen if t is not None}
            assert retries == want, (make_fail.__name__, retries)
            firsts = {(st, r) for t, st, r in seen if t is None}
            # after a quiet window a take's later windows start with the pulling sampler
            assert firsts == ({(5, 3), pulled} if make_fail is _silent_unless_positive else {(5, 3)}), firsts
    # the pulling sampler is the manifest's: other fields, other passes and steps
    with monkeypatch.context() as m:
        m.setattr(bundle, "sampler_defaults", dataclasses.replace(d, pull_resample=3, pull_steps=0.4))
        _silent_unless_positive(bundle, m)
        seen = _spy_generate(bundle, m)
        for seed in range(4):
            list(generate_region(bundle, given, ["drums", "guitar", "piano"], n, seed=seed, steps=5,
                                 resample=3, silent_retries=2))
        assert {(st, r) for t, st, r in seen if t is not None} == {(2, 8)}
    # nothing given (total generation): nothing to pull towards, a silent window is sampled again as asked
    with monkeypatch.context() as m:
        _silent_unless_positive(bundle, m)
        seen = _spy_generate(bundle, m)
        t = Timings()
        for seed in range(4):
            list(generate_region(bundle, {}, ["drums", "guitar", "piano"], n, seed=seed, steps=5, resample=3,
                                 timings=t))
        assert t.rerolls_total > 0 and {(st, r) for _, st, r in seen} == {(5, 3)}


def test_pulled_windows_report_progress_in_the_requests_steps(bundle, monkeypatch):
    _silent_unless_positive(bundle, monkeypatch)
    n = int(3.5 * WINDOW * HOP)
    given = {"bass": (0.1 * np.random.default_rng(0).standard_normal(n)).astype(np.float32)}
    rerolled = 0
    for seed in range(6):
        calls = []
        t = Timings()
        list(generate_region(bundle, given, ["drums", "guitar", "piano"], n, seed=seed, steps=5, timings=t,
                             hook=lambda w, step, total: calls.append((w, step, total))))
        assert {total for _, _, total in calls} == {5}  # every window in the request's steps
        overall = [w * 5 + step for w, step, _ in calls]
        assert overall == sorted(overall) and overall[-1] == 5 * (1 + max(w for w, _, _ in calls))
        rerolled += t.rerolls_total
    assert rerolled > 0  # quiet windows were sampled again, and later ones pulled


def _blown_unless_positive(bundle, monkeypatch):
    """The tiny bundle's decoder, for the stems asked for as drums, guitar, piano: the guitar
    bursts at 3x full scale in every block whose mean latent is <= 0, a quiet tone otherwise."""
    def decode(z):
        n = z.shape[-1] * bundle.D
        tone = (0.3 * np.sin(0.05 * np.arange(n))).astype(np.float32)
        return np.stack([[10.0 * tone if j % 3 == 1 and blk.mean() <= 0 else tone]
                         for j, blk in enumerate(z)])

    monkeypatch.setattr(bundle, "decode", decode)


def test_a_blown_generated_stem_is_sampled_again_even_where_the_given_stems_rest(bundle, monkeypatch):
    _blown_unless_positive(bundle, monkeypatch)
    n = int(3.5 * WINDOW * HOP)
    L = default_overlap(WINDOW) * HOP
    quiet = {"bass": np.zeros(n, np.float32)}  # resting given stems do not excuse a burst

    def blown(pieces):
        return sum(np.abs(p.stems["guitar"][L:]).max() > 1.0 for p in pieces if len(p.stems["guitar"]) > L)

    counts = {0: 0, 4: 0}
    for seed in range(8):
        plain, none = _run_region(bundle, quiet, n, seed, 0)
        guarded, rerolls = _run_region(bundle, quiet, n, seed, 4)
        counts[0] += blown(plain)
        counts[4] += blown(guarded)
        assert none == 0 and (rerolls > 0) == (blown(plain) > 0)
        for p in guarded:  # the drums and piano of a kept attempt are its own, not rescaled
            assert np.abs(p.stems["drums"]).max() <= 0.31
            assert np.abs(p.stems["guitar"]).max() < 1.0  # a window blown every time is tamed
    # a guitar blown in about half the windows at first (18 of 40 here); none after
    assert counts[0] >= 12 and counts[4] == 0, counts


def test_an_attempt_that_is_silent_is_kept_before_one_that_is_blown():
    from server.windowing import _attempt_key

    n, span = 22050, (0, 22050)
    t = np.sin(0.05 * np.arange(n)).astype(np.float32)
    silent = {"guitar": np.zeros(n, np.float32)}
    blown = {"guitar": 2.0 * t}
    fine = {"guitar": 0.3 * t}
    keys = {name: _attempt_key(s, ["guitar"], span, judge_silence=True)
            for name, s in (("silent", silent), ("blown", blown), ("fine", fine))}
    assert keys["fine"] < keys["silent"] < keys["blown"]
    assert keys["fine"][:2] == (False, False) and keys["blown"][0] and keys["silent"][1]
    # where the given stems rest, silence is no failure, a burst still is
    assert _attempt_key(silent, ["guitar"], span, judge_silence=False)[:2] == (False, False)
    assert _attempt_key(blown, ["guitar"], span, judge_silence=False)[0]


def test_an_attempt_buried_under_the_given_stems_ranks_between_fine_and_silent():
    from server.windowing import BURIED_DB, _attempt_key

    n, span = 22050, (0, 22050)
    t = np.sin(0.05 * np.arange(n)).astype(np.float32)  # RMS 1/sqrt(2): -3 dBFS at amplitude 1
    given_db = -20.0
    edge = given_db + BURIED_DB["guitar"]  # -41 dBFS
    amp = lambda db: np.float32(10 ** ((db + 3.0103) / 20))  # noqa: E731
    fine = {"guitar": amp(edge + 1) * t}
    buried = {"guitar": amp(edge - 1) * t}  # still audible (frames over -50 dBFS): not silent
    silent = {"guitar": np.zeros(n, np.float32)}
    keys = {name: _attempt_key(s, ["guitar"], span, True, given_db)
            for name, s in (("fine", fine), ("buried", buried), ("silent", silent))}
    assert keys["fine"][:3] == (False, False, False)
    assert keys["buried"][:3] == (False, False, True)
    assert keys["fine"] < keys["buried"] < keys["silent"]
    # nothing given that sounds (None): no level to be buried under
    assert _attempt_key(buried, ["guitar"], span, True, None)[:3] == (False, False, False)
    # the margin is per stem: the same level is fine for a piano, whose real parts sit lower
    assert BURIED_DB["piano"] < BURIED_DB["guitar"]
    between = {"piano": amp(edge - 0.5) * t}
    assert not _attempt_key(between, ["piano"], span, True, given_db)[2]


def _quiet_unless_positive(bundle, monkeypatch, quiet_db: float):
    """The tiny bundle's decoder, for the stems asked for as drums, guitar, piano: the guitar a
    tone at `quiet_db` dBFS RMS in every block whose mean latent is <= 0, at -13.5 dBFS otherwise;
    drums and piano always the loud tone."""
    def decode(z):
        n = z.shape[-1] * bundle.D
        tone = (0.3 * np.sin(0.05 * np.arange(n))).astype(np.float32)
        quiet = (tone * 10 ** ((quiet_db + 13.47) / 20)).astype(np.float32)
        return np.stack([[quiet if j % 3 == 1 and blk.mean() <= 0 else tone] for j, blk in enumerate(z)])

    monkeypatch.setattr(bundle, "decode", decode)


def test_a_window_with_a_generated_stem_buried_under_the_given_ones_is_sampled_again(bundle, monkeypatch):
    from server.windowing import Timings

    _quiet_unless_positive(bundle, monkeypatch, quiet_db=-45.0)  # audible, 25 dB under the given bass
    n = int(3.5 * WINDOW * HOP)
    L = default_overlap(WINDOW) * HOP
    loud = {"bass": (0.1 * np.random.default_rng(5).standard_normal(n)).astype(np.float32)}  # -20 dBFS

    def quiet_pieces(pieces):
        return sum(float(np.sqrt(np.mean(p.stems["guitar"][L:] ** 2))) < 0.01 for p in pieces
                   if len(p.stems["guitar"]) > L)

    counts = {0: 0, 4: 0}
    for seed in range(8):
        plain, none = _run_region(bundle, loud, n, seed, 0)
        guarded, rerolls = _run_region(bundle, loud, n, seed, 4)
        assert none == 0 and (rerolls > 0) == (quiet_pieces(plain) > 0)
        counts[0] += quiet_pieces(plain)
        counts[4] += quiet_pieces(guarded)
    assert counts[0] >= 8 and counts[4] <= counts[0] // 3, counts
    # the same quiet guitar under given stems as quiet as it is: a fitting level, kept as made
    soft = {"bass": (0.0056 * np.random.default_rng(5).standard_normal(n)).astype(np.float32)}  # -45 dBFS
    for seed in range(4):
        t = Timings()
        list(generate_region(bundle, soft, ["drums", "guitar", "piano"], n, seed=seed, steps=2, timings=t))
        assert t.rerolls_total == 0


def test_a_window_blown_at_every_attempt_is_scaled_under_the_threshold_not_left_as_made(bundle, monkeypatch):
    from server.windowing import BLOWN_DBFS
    from msldm.eval.density import FRAME, HOP as FRAME_HOP
    from msldm.eval.dsp import frame_rms_db

    def decode(z):  # the guitar always bursts, drums and piano a quiet tone
        n = z.shape[-1] * bundle.D
        tone = (0.3 * np.sin(0.05 * np.arange(n))).astype(np.float32)
        return np.stack([[10.0 * tone if j % 3 == 1 else tone] for j in range(len(z))])

    monkeypatch.setattr(bundle, "decode", decode)
    n = int(2.5 * WINDOW * HOP)
    t = Timings()
    pieces, rerolls = _run_region(bundle, {"bass": np.zeros(n, np.float32)}, n, 0, 2, timings=t)
    assert rerolls > 0  # it tried first
    assert t.tamed == {0: len({p.window for p in pieces})}  # every window, counted for done to report
    guitar = np.concatenate([p.stems["guitar"] for p in pieces])
    assert frame_rms_db(guitar, FRAME, FRAME_HOP).max() < BLOWN_DBFS  # tamed,
    assert np.abs(guitar).max() > 0.1  # not muted
    drums = np.concatenate([p.stems["drums"] for p in pieces])
    assert np.abs(drums).max() == pytest.approx(0.3, abs=1e-3)  # the stems that did not burst are untouched


def test_a_request_given_the_bass_samples_with_reconstruction_guidance_from_the_pitched_stems(bundle, monkeypatch):
    # the model reads a given bass weakly: the daemon pulls the generated part towards the given
    # stems with notes (docs/eval/model-history.md, "Eighteenth session"); not where the bass is generated
    import dataclasses

    from server.windowing import bass_given_sampler

    # the manifest's policy (the tiny bundle's: the shipped one's values)
    d = bundle.sampler_defaults
    W_, R_, T_ = d.bass_given_reconstruction, d.bass_given_resample, d.bass_drums_reconstruction_tmin
    assert (W_, R_, T_) == (4.0, 2, 1.0)
    n = int(1.5 * WINDOW * HOP)
    noise = np.random.default_rng(5)
    audio = {s: (0.1 * noise.standard_normal(n)).astype(np.float32) for s in ("bass", "drums", "piano")}
    seen, real = [], bundle.generate
    C = bundle.C

    def spy(*args, **kw):
        rmask = kw.get("reconstruction_mask")
        assert (rmask is None) == (kw.get("reconstruction") is None)
        # whose error guides: the given stems with notes over all their frames; never the drums,
        # nor the previous window's imposed frames of a generated stem
        blocks = None if rmask is None else frozenset(
            s for k, s in enumerate(bundle.stems) if rmask[:, k * C:(k + 1) * C].any())
        if rmask is not None:
            assert all(rmask[:, bundle.stems.index(s) * C:(bundle.stems.index(s) + 1) * C].all() for s in blocks)
        seen.append((kw.get("reconstruction"), kw.get("resample"), blocks, kw.get("reconstruction_tmin")))
        return real(*args, **kw)

    monkeypatch.setattr(bundle, "generate", spy)

    def asked(given, requested, **kw):
        seen.clear()
        list(generate_region(bundle, {s: audio[s] for s in given}, requested, n, seed=0, steps=3,
                             silent_retries=0, **kw))
        return set(seen)

    pulled = (W_, R_)
    # given the bass and drums alone: their own band; given anything else with the bass, the manifest's
    assert asked(["bass", "drums"], ["guitar", "piano"]) == {(*pulled, frozenset({"bass"}), T_)}
    assert asked(["bass"], ["drums", "guitar"]) == {(*pulled, frozenset({"bass"}), None)}
    assert asked(["bass", "piano"], ["drums", "guitar"]) == {(*pulled, frozenset({"bass", "piano"}), None)}
    assert asked(["bass", "drums"], ["guitar"], resample=4) == {(W_, 4, frozenset({"bass"}), T_)}
    off = {(None, None, None, None)}
    assert asked(["drums", "piano"], ["bass", "guitar"]) == off  # the README's request
    assert asked(["drums"], ["bass", "guitar"]) == off
    assert asked(["bass", "drums"], ["guitar", "piano"], guidance=3.0) == off
    assert asked([], ["bass", "guitar"]) == off  # total generation
    # the passes field 0 leaves them to the manifest's `resample`; the weight 0 turns it all off
    monkeypatch.setattr(bundle, "sampler_defaults", dataclasses.replace(bundle.sampler_defaults, bass_given_resample=0))
    assert bass_given_sampler(bundle, ["bass", "drums"], None, None) == (None, W_, ("bass",), T_)
    assert bass_given_sampler(bundle, ["bass", "drums"], 3, None) == (3, W_, ("bass",), T_)
    monkeypatch.setattr(bundle, "sampler_defaults",
                        dataclasses.replace(bundle.sampler_defaults, bass_drums_reconstruction_tmin=None))
    assert bass_given_sampler(bundle, ["bass", "drums"], None, None) == (None, W_, ("bass",), None)
    monkeypatch.setattr(bundle, "sampler_defaults",
                        dataclasses.replace(bundle.sampler_defaults, bass_given_reconstruction=0.0))
    assert bass_given_sampler(bundle, ["bass", "drums"], None, None) == (None, None, None, None)


def test_the_shipped_manifest_writes_the_given_bass_sampler():
    # the bundled model's given-bass policy is the manifest's, stated there, not a daemon constant
    from msldm.config import get_preset
    from server.runtime import sampler_defaults

    block = json.loads((Path(__file__).resolve().parents[1] / "msldm/assets/bundle/manifest.json")
                       .read_text())["sampler"]
    assert block["bass_given_reconstruction"] == 4.0 and block["bass_given_resample"] == 2
    assert block["bass_drums_reconstruction_tmin"] == 1.0 and block["bass_drums_select"] == 2
    assert block["pull_resample"] == 2 and block["pull_steps"] == 0.6
    assert block["harmony_given_guidance"] == 2.0 and block["harmony_given_resample"] == 0
    d = sampler_defaults(block)
    assert d == get_preset("cpu").sampler  # what `msldm export` writes from the preset
    for bad in ({"bass_given_reconstruction": -1.0}, {"bass_given_reconstruction": 9.0},
                {"bass_given_resample": -1}, {"guidance": 2.0}, {"bass_drums_reconstruction_tmin": -0.5},
                {"bass_drums_select": 0}, {"bass_drums_select": 9}, {"pull_resample": 0}, {"pull_steps": 0.0},
                {"pull_steps": 1.5}, {"harmony_given_guidance": -1.0}, {"harmony_given_guidance": 9.0},
                {"harmony_given_resample": -1}, {"harmony_given_resample": 9}):
        with pytest.raises(Exception, match="bass_given|bass_drums|guidance|pull_|harmony_given"):
            sampler_defaults({**block, **bad})


def test_a_schedule_sampled_in_two_spans_is_the_whole_schedule(bundle):
    # best_of samples candidates down to one noise level and the chosen one on from there: the two
    # spans must churn and step as the whole schedule does, drawing the same noise in the same order
    K, Cb, T = bundle.K, bundle.C, WINDOW
    given = np.random.default_rng(1).standard_normal((1, K * Cb, T)).astype(np.float32) * 0.4
    mask = bundle.stem_mask(["bass", "drums"], T)
    kw = dict(steps=6, given=given, mask=mask, S_churn=2.0, reconstruction=4.0, reconstruction_tmin=0.5)
    whole = bundle.generate((1, K * Cb, T), seed=3, **kw)
    rng, seen = np.random.default_rng(3), []
    x = bundle.generate((1, K * Cb, T), seed=0, rng=rng, span=(0, 2),
                        callback=lambda step, total, sigma, x, d: seen.append((step, total)), **kw)
    out = bundle.generate((1, K * Cb, T), seed=0, rng=rng, span=(2, 6), state=x,
                          callback=lambda step, total, sigma, x, d: seen.append((step, total)), **kw)
    assert seen == [(s, 6) for s in range(1, 7)]  # progress in the schedule's steps
    np.testing.assert_allclose(out, whole, atol=1e-4)
    # churned as a 2-step schedule instead, the first span comes out otherwise
    y = bundle.generate((1, K * Cb, T), seed=3, **{**kw, "steps": 2})
    assert not np.allclose(x, y, atol=1e-3)
    for bad in ((0, 7), (3, 3), (-1, 2)):
        with pytest.raises(ValueError, match="span"):
            bundle.generate((1, K * Cb, T), seed=0, span=bad, **kw)


def test_given_bass_and_drums_the_candidate_that_misses_the_bass_least_goes_on(bundle, monkeypatch):
    # the manifest's bass_drums_select: that many candidates per take down to the guidance's lowest
    # noise level, then the one whose estimate of the given bass is closest goes on alone
    import dataclasses

    k = 3
    monkeypatch.setattr(bundle, "sampler_defaults", dataclasses.replace(bundle.sampler_defaults, bass_drums_select=k))
    n = WINDOW * HOP
    noise = np.random.default_rng(9)
    audio = {s: (0.1 * noise.standard_normal(n)).astype(np.float32) for s in ("bass", "drums", "piano")}
    real, calls = bundle.generate, []

    def spy(shape, **kw):
        rec = {"shape": shape, "span": kw.get("span"), "state": kw.get("state"), "kw": kw}
        inner = kw.get("callback")

        def grab(step, total, sigma, x, d):
            rec["denoised"] = d
            if inner is not None:
                inner(step, total, sigma, x, d)

        rec["out"] = real(shape, **{**kw, "callback": grab})
        calls.append(rec)
        return rec["out"]

    monkeypatch.setattr(bundle, "generate", spy)
    got = [p for p in generate_region(bundle, {s: audio[s] for s in ("bass", "drums")}, ["guitar", "piano"], n,
                                      seed=4, steps=6, takes=2, silent_retries=0)]
    first, rest = calls
    assert first["shape"][0] == 2 * k and rest["shape"][0] == 2  # k candidates of each take, as one batch
    j = first["span"][1]
    sigmas = bundle.sigmas(6)
    assert first["span"] == (0, j) and rest["span"] == (j, 6)
    assert sigmas[j - 1] >= bundle.sampler_defaults.bass_drums_reconstruction_tmin > sigmas[j]
    kw = first["kw"]
    where = kw["mask"] * kw["reconstruction_mask"]  # the given bass's block only
    Cb, b_ = bundle.C, bundle.stems.index("bass")
    assert where[:, b_ * Cb:(b_ + 1) * Cb].all() and where.sum() == where[:, b_ * Cb:(b_ + 1) * Cb].sum()
    miss = np.square((kw["given"] - first["denoised"]) * where).reshape(2, k, -1).sum(-1)
    best = np.argmin(miss, axis=1)
    assert len(set(np.round(miss.ravel(), 6))) == 2 * k  # the candidates differ
    np.testing.assert_array_equal(rest["state"], first["out"].reshape((2, k) + first["out"].shape[1:])[[0, 1], best])
    assert len(got) == 2
    # a take of the batch is the take its seed makes alone: its candidates come from its own noise
    calls.clear()
    alone = [p for p in generate_region(bundle, {s: audio[s] for s in ("bass", "drums")}, ["guitar", "piano"], n,
                                        seed=5, steps=6, takes=1, silent_retries=0)]
    for s in ("guitar", "piano"):
        np.testing.assert_allclose(alone[0].stems[s], [p for p in got if p.take == 1][0].stems[s], atol=1e-4)
    # the candidates follow the given stems, not the band: with no band of its own the bass and
    # drums' guidance runs to the manifest's reconstruction_tmin, and the candidates with it
    monkeypatch.setattr(bundle, "sampler_defaults", dataclasses.replace(
        bundle.sampler_defaults, bass_drums_reconstruction_tmin=None, reconstruction_tmin=0.5))
    calls.clear()
    list(generate_region(bundle, {s: audio[s] for s in ("bass", "drums")}, ["guitar", "piano"], n, seed=4,
                         steps=6, silent_retries=0))
    assert [c["shape"][0] for c in calls] == [k, 1] and calls[0]["span"][1] == sum(s >= 0.5 for s in sigmas[:-1])
    # other given stems: one candidate (the bass and piano given sample from sigma 0.3 down)
    calls.clear()
    list(generate_region(bundle, {s: audio[s] for s in ("bass", "piano")}, ["drums", "guitar"], n, seed=4,
                         steps=6, silent_retries=0))
    assert [c["span"] for c in calls] == [None]


def test_a_request_chooses_the_candidates_given_bass_and_drums(bundle, monkeypatch):
    # `candidates` overrides the manifest's bass_drums_select for one region: 1 samples exactly as a
    # bundle whose manifest says 1, 3 samples three rows a take; other given stems ignore it
    import dataclasses

    n = WINDOW * HOP
    noise = np.random.default_rng(11)
    audio = {s: (0.1 * noise.standard_normal(n)).astype(np.float32) for s in ("bass", "drums", "piano")}
    bd = {s: audio[s] for s in ("bass", "drums")}
    real, rows = bundle.generate, []

    def spy(shape, **kw):
        rows.append(shape[0])
        return real(shape, **kw)

    def region(given, requested, defaults=2, **kw):
        monkeypatch.setattr(bundle, "sampler_defaults",
                            dataclasses.replace(bundle.sampler_defaults, bass_drums_select=defaults))
        rows.clear()
        t = Timings()
        pieces = list(generate_region(bundle, given, requested, n, seed=4, steps=6, silent_retries=0, timings=t, **kw))
        return {s: pieces[0].stems[s] for s in requested}, list(rows), t.candidates

    monkeypatch.setattr(bundle, "generate", spy)
    one_asked, shapes, used = region(bd, ["guitar", "piano"], candidates=1)
    assert shapes == [1] and used == 1
    one_bundle, shapes, used = region(bd, ["guitar", "piano"], defaults=1)
    assert shapes == [1] and used == 1
    for s in ("guitar", "piano"):
        np.testing.assert_array_equal(one_asked[s], one_bundle[s])
    three, shapes, used = region(bd, ["guitar", "piano"], defaults=1, candidates=3)
    assert shapes == [3, 1] and used == 3
    two_asked, shapes, used = region(bd, ["guitar", "piano"], defaults=1, candidates=2)
    two_bundle, _, _ = region(bd, ["guitar", "piano"], defaults=2)
    assert shapes == [2, 1] and used == 2
    for s in ("guitar", "piano"):
        np.testing.assert_array_equal(two_asked[s], two_bundle[s])
        assert not np.allclose(two_asked[s], one_asked[s], atol=1e-4)
    # bass and piano given: one candidate, whatever the request asks
    _, shapes, used = region({s: audio[s] for s in ("bass", "piano")}, ["drums", "guitar"], candidates=3)
    assert shapes == [1] and used == 1
    for bad in (0, MAX_SELECT + 1):
        with pytest.raises(ValueError, match="candidates"):
            region(bd, ["guitar", "piano"], candidates=bad)


def test_a_guitar_or_piano_given_alone_is_sampled_with_the_manifests_given_part_guidance(bundle, monkeypatch):
    # harmony_given_guidance / harmony_given_resample: where the given stems are a guitar and/or
    # piano alone and the request asks no guidance, the generated bass and drums are pulled
    # towards the given stems' timing; a request's own guidance, any other given stems and a
    # redo sample as before
    import dataclasses

    n = WINDOW * HOP
    noise = np.random.default_rng(12)
    audio = {s: (0.1 * noise.standard_normal(n)).astype(np.float32) for s in ("bass", "drums", "guitar", "piano")}
    real, seen = bundle.generate, []

    def spy(shape, **kw):
        seen.append((kw.get("guidance"), kw.get("resample")))
        return real(shape, **kw)

    monkeypatch.setattr(bundle, "generate", spy)

    def region(given, requested, guidance=None, resample=None, **fields):
        monkeypatch.setattr(bundle, "sampler_defaults", dataclasses.replace(bundle.sampler_defaults, **fields))
        seen.clear()
        t = Timings()
        pieces = list(generate_region(bundle, {s: audio[s] for s in given}, requested, n, seed=3, steps=4,
                                      silent_retries=0, timings=t, guidance=guidance, resample=resample))
        return seen[0], t, pieces[0].stems

    on = {"harmony_given_guidance": 2.0, "harmony_given_resample": 1}
    (g, r), t, pulled = region(["guitar", "piano"], ["bass", "drums"], **on)
    assert (g, r, t.guidance, t.passes) == (2.0, 1, 2.0, 1)
    (g, r), t, _ = region(["piano"], ["bass", "drums", "guitar"], **on)
    assert (g, r) == (2.0, 1)
    (g, r), t, _ = region(["guitar", "piano"], ["bass", "drums"], resample=3, **on)  # the request's passes
    assert (g, r) == (2.0, 3)
    (g, r), t, plain = region(["guitar", "piano"], ["bass", "drums"], guidance=1.0, **on)  # the request's guidance
    assert g == 1.0 and t.guidance == 1.0 and not np.allclose(plain["bass"], pulled["bass"], atol=1e-4)
    for given, requested in ((["drums", "piano"], ["bass", "guitar"]), (["bass", "piano"], ["drums", "guitar"])):
        (g, r), t, _ = region(given, requested, **on)
        assert g is None and t.guidance is None
    # off in the manifest (1): as before
    (g, r), t, _ = region(["guitar", "piano"], ["bass", "drums"], harmony_given_guidance=1.0, harmony_given_resample=0)
    assert g is None and t.guidance is None
    # a redo keeps the sampler it asks for
    monkeypatch.setattr(bundle, "sampler_defaults", dataclasses.replace(bundle.sampler_defaults, **on))
    seen.clear()
    frames = np.ones(WINDOW, bool)
    frames[WINDOW // 2:] = False
    list(generate_region(bundle, {s: audio[s] for s in ("guitar", "piano")}, ["guitar"], n, seed=3, steps=4,
                         silent_retries=0, kept_frames={"guitar": frames}))
    assert seen[0][0] is None
