"""The evaluation run: generate every task for every segment, score, aggregate.

For each task (a subset of generated stems; the others are given, BDGP = total
generation) and segment, the generator makes the target stems; the harness records per
generated stem its density, emptiness and fit (raw and normalised, see `msldm.eval.fit`),
and embeds the mixture (given + generated) for the sub-FAD against the real mixtures
(Table 2 of the MSLDM paper); for total generation each stem is also embedded for the
per-stem FAD (Fig. 2). Then the optional VAE reconstruction metrics and the steps sweep.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from msldm.eval.data import Segment, load_segments, pick_mismatched
from msldm.eval.density import audible_fraction, is_empty
from msldm.eval.dsp import level_db
from msldm.eval.embeddings import Embedding, build_embedding
from msldm.eval.fit import FIT_KEYS, Context, build_context, fit_scores, mean_ignore_nan, normalise, normalised_fit
from msldm.eval.frechet import frechet_from_embeddings, noise_floor
from msldm.eval.generators import Generator
from msldm.eval.harmony import PITCHED_STEMS, stem_notes
from msldm.eval.transcribe import pitch_diagnostics
from msldm.eval.reconstruction import reconstruction_metrics
from msldm.eval.tables import STEMS, TOTAL, parse_subsets, subset_stems

DRAW_STRIDE = 1_000_003
"""Generator seeds of draw d are clip seeds + d * this: no two draws of any eval size share one."""
PITCH_FIELDS = ("notes_per_s", "pitch_low", "pitch_high", "comb_share")
FIT_FIELDS = ("harmonic", "harmonic_norm", "harmonic_real", "harmonic_mismatched",
              "rhythmic", "rhythmic_norm", "rhythmic_real", "rhythmic_mismatched")


@dataclass(frozen=True)
class EvalConfig:
    """Settings of one evaluation run (defaults: the paper's 200 segments of 12 s)."""

    n: int = 200
    seconds: float = 12.0
    sample_rate: int = 22050
    subsets: tuple[str, ...] = tuple(parse_subsets("all"))
    steps: int = 20  # sampler steps of the main run
    sampler: str = "euler"
    schedule: str = "karras"
    resample: int | None = None  # RePaint takes of the main run (None: the bundle's)
    churn: float | None = None  # S_churn of the main run (None: the bundle's)
    sweep_steps: tuple[int, ...] = (5, 10, 20)
    sweep_samplers: tuple[str, ...] = ("euler", "heun")
    sweep_schedules: tuple[str, ...] = ("karras",)
    sweep_resamples: tuple[int, ...] = (1,)
    sweep_churns: tuple[float | None, ...] = (None,)
    sweep_n: int = 8
    recon_n: int = 16
    embedding: str = "stats"
    embedding_weights: str | None = None
    seed: int = 0  # the clips' draw and the generations' seeds
    draw: int = 0  # another draw of the generations on the same clips (seeds offset by draw * DRAW_STRIDE)
    split: str = "test"
    save_examples: int = 2  # segments per task whose audio and spectrograms are written
    use_annotation: bool = True
    frame_rate_hz: float = 22050 / 320  # latent frame rate (sample_rate / hop): a decoder comb's pitch
    silent_retries: int | None = None  # the bundle generator's re-sampling of silent windows (None: the daemon's)
    sampler_fields: tuple[tuple[str, str], ...] = ()  # (field, text) set on the bundle's sampler defaults
    level: str = "balance"  # the bundle generator's level of generated stems (server.levels: "balance" where
    # the bundle has a balance table and stems are given, else the decoder's; "model": always the decoder's)


@dataclass
class RunState:
    """Everything the run accumulates (kept out of the config)."""

    segments: list[Segment]
    mismatched: list[int]
    embedding: Embedding
    contexts: dict = field(default_factory=dict)
    references: dict = field(default_factory=dict)
    examples: dict = field(default_factory=dict)  # (task, i) -> {stem: generated audio}


def _context(st: RunState, cfg: EvalConfig, i: int, given_names: tuple[str, ...]) -> Context:
    key = (i, given_names)
    if key not in st.contexts:
        seg = st.segments[i]
        given = {s: seg.stems[s] for s in given_names}
        ann = seg.annotation if cfg.use_annotation else None
        st.contexts[key] = build_context(given, cfg.sample_rate, ann)
    return st.contexts[key]


def _references(st: RunState, cfg: EvalConfig, i: int, given_names: tuple[str, ...],
                stem: str) -> dict:
    key = (i, given_names, stem)
    if key not in st.references:
        ctx = _context(st, cfg, i, given_names)
        j = st.mismatched[i]
        mism = st.segments[j].stems[stem] if j >= 0 else np.zeros_like(st.segments[i].stems[stem])
        st.references[key] = {"real": fit_scores(st.segments[i].stems[stem], cfg.sample_rate, stem, ctx),
                              "mismatched": fit_scores(mism, cfg.sample_rate, stem, ctx)}
    return st.references[key]


def score_stem(st: RunState, cfg: EvalConfig, i: int, given_names: tuple[str, ...], stem: str,
               audio: np.ndarray) -> dict[str, float]:
    """Density, emptiness and fit (raw / normalised / references) of one generated stem."""
    rec = {"audible_fraction": audible_fraction(audio), "empty": float(is_empty(audio)),
           "level_db": level_db(audio), "level_db_real": level_db(st.segments[i].stems[stem])}
    if stem in PITCHED_STEMS:  # what a transcription hears: notes, range, the frame-rate comb
        rec.update(pitch_diagnostics(stem_notes(audio, cfg.sample_rate), len(audio) / cfg.sample_rate,
                                     cfg.frame_rate_hz))
        # the real stem's share at that pitch: a bass line in C#, F# or A plays C#2 (69.3 Hz, the
        # comb's MIDI pitch) as real notes, so a clip's comb share is read against its real one
        real = st.segments[i].stems[stem]
        rec["comb_share_real"] = pitch_diagnostics(stem_notes(real, cfg.sample_rate), len(real) / cfg.sample_rate,
                                                   cfg.frame_rate_hz)["comb_share"]
    if given_names:
        ctx = _context(st, cfg, i, given_names)
        refs = _references(st, cfg, i, given_names, stem)
        j = st.mismatched[i]
        mism = st.segments[j].stems[stem] if j >= 0 else np.zeros_like(audio)
        rec.update(normalised_fit(audio, st.segments[i].stems[stem], mism, cfg.sample_rate, stem, ctx, refs))
    else:
        rec.update({k: float("nan") for k in FIT_FIELDS})
    return rec


def run_task(st: RunState, cfg: EvalConfig, generator: Generator, task: str, steps: int,
             sampler: str, segment_ids: list[int], schedule: str = "karras", resample: int = 1,
             for_report: bool = True, churn: float | None = None) -> dict:
    """Generate `task` for the given segments; per-stem records, mixture embeddings, timing.
    `for_report` False (the steps sweep): no embeddings and no example audio, so the main
    run's examples are not overwritten."""
    targets = subset_stems(task)
    given_names = tuple(s for s in STEMS if s not in targets)
    records: dict[str, list[dict]] = {s: [] for s in targets}
    mix_emb, stem_emb, seconds = [], {s: [] for s in targets}, 0.0
    for i in segment_ids:
        seg = st.segments[i]
        given = {s: seg.stems[s] for s in given_names}
        n = len(seg.stems["bass"])
        t0 = time.perf_counter()
        out = generator(given, list(targets), n_samples=n, seed=cfg.seed + i + cfg.draw * DRAW_STRIDE,
                        steps=steps, sampler=sampler, schedule=schedule, resample=resample, churn=churn)
        seconds += time.perf_counter() - t0
        out = {s: np.pad(np.asarray(out[s], np.float32).reshape(-1)[:n], (0, max(0, n - len(out[s]))))
               for s in targets}
        for s in targets:
            records[s].append(score_stem(st, cfg, i, given_names, s, out[s]))
        if not for_report:
            continue
        mix = np.sum([out[s] for s in targets] + [given[s] for s in given_names], axis=0)
        mix_emb.append(st.embedding(mix, cfg.sample_rate))
        if task == TOTAL:
            for s in targets:
                stem_emb[s].append(st.embedding(out[s], cfg.sample_rate))
        if i < cfg.save_examples:
            st.examples[(task, i)] = out
    return {"records": records, "mix_emb": mix_emb, "stem_emb": stem_emb,
            "time_per_clip": seconds / max(1, len(segment_ids))}


SE_FIELDS = ("harmonic_norm", "rhythmic_norm", "level_db", "comb_share", "audible_fraction")
"""Fields whose standard error over clips the summary also gives (`<field>_se`): with 24 clips a
difference of two runs smaller than about twice it is not a difference."""


PER_CLIP_FIELDS = ("harmonic_norm", "rhythmic_norm", "harmonic", "rhythmic", "level_db", "comb_share",
                   "comb_share_real", "audible_fraction", "empty")
"""Fields kept clip by clip in the metrics (`tasks.<task>.per_clip`): two runs on the same
clips and seeds are compared pair by pair (`paired_difference`), which sees a difference the
means' standard errors hide. The raw fits are kept too: on the same clips both runs share
each clip's real and mismatched scores, so their paired raw difference is the robust one
(a per-clip normalised figure divides by that clip's gap, small on some clips)."""


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, int]:
    """Mean and standard error of b - a over the clips where both are finite, and their count."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None
             and np.isfinite(x) and np.isfinite(y)]
    d = [y - x for x, y in pairs]
    return (float(np.mean(d)) if d else float("nan"), standard_error(d), len(d))


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean of the finite values (NaN with fewer than two)."""
    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.std(ddof=1) / np.sqrt(a.size)) if a.size > 1 else float("nan")


def pooled_norm(recs: Sequence[dict], key: str) -> float:
    """`normalise` of the means over the clips where the generated, real and mismatched scores
    of `key` are all finite: the generated stem's fit above the mismatched baseline as a share of
    the real stem's. The mean of per-clip `<key>_norm` is outlier-prone: one clip whose real stem
    barely beats its mismatched one (a gap just above `MIN_GAP`) can move it by 0.3 over 24 clips
    (a clip at -7.1 on 2026-12-04); this cannot."""
    rows = [(r[key], r[f"{key}_real"], r[f"{key}_mismatched"]) for r in recs
            if all(f in r for f in (key, f"{key}_real", f"{key}_mismatched"))]
    rows = [row for row in rows if all(v is not None and np.isfinite(v) for v in row)]
    if not rows:
        return float("nan")
    gen, real, mism = np.mean(rows, axis=0)
    return normalise(float(gen), float(real), float(mism))


def summarise_records(records: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    """Mean of every field per stem (NaN-aware), the standard error of `SE_FIELDS`, the pooled
    normalised fits (`<key>_norm_pooled`, see `pooled_norm`), and the number of clips."""
    out = {}
    for stem, recs in records.items():
        keys = recs[0].keys() if recs else []
        out[stem] = {k: mean_ignore_nan([r[k] for r in recs]) for k in keys}
        out[stem].update({f"{k}_se": standard_error([r[k] for r in recs]) for k in SE_FIELDS if k in keys})
        out[stem].update({f"{k}_norm_pooled": pooled_norm(recs, k) for k in FIT_KEYS if k in keys})
        out[stem]["empty_rate"] = out[stem].pop("empty", float("nan"))
        out[stem]["clips"] = len(recs)
    return out


def _fd(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return frechet_from_embeddings(np.concatenate(a), np.concatenate(b)) if a and b else float("nan")


def evaluate_tasks(st: RunState, cfg: EvalConfig, generator: Generator, real_mix: list,
                   real_stems: dict) -> dict:
    """All tasks of `cfg.subsets` on all segments: sub-FAD, total-generation FAD, fits."""
    tasks = {}
    ids = list(range(len(st.segments)))
    for task in cfg.subsets:
        res = run_task(st, cfg, generator, task, cfg.steps, cfg.sampler, ids, cfg.schedule, cfg.resample,
                       churn=cfg.churn)
        entry = {"subfad": _fd(res["mix_emb"], real_mix), "time_per_clip": res["time_per_clip"],
                 "stems": summarise_records(res["records"]),
                 "per_clip": {s: {k: [r[k] for r in recs] for k in PER_CLIP_FIELDS if recs and k in recs[0]}
                              for s, recs in res["records"].items()}}
        if task == TOTAL:
            entry["fad_stems"] = {s: _fd(res["stem_emb"][s], real_stems[s]) for s in STEMS}
        tasks[task] = entry
    return tasks


def steps_sweep(st: RunState, cfg: EvalConfig, generator: Generator) -> list[dict]:
    """Fit, density and time vs (sampler, schedule, resample, churn, steps) on the first `sweep_n`
    segments, segment i generating stem STEMS[i % 4] given the other three."""
    rows = []
    ids = list(range(min(cfg.sweep_n, len(st.segments))))
    points = [(sa, sc, r, c, n) for sa in cfg.sweep_samplers for sc in cfg.sweep_schedules
              for r in cfg.sweep_resamples for c in cfg.sweep_churns for n in cfg.sweep_steps]
    for sampler, schedule, resample, churn, steps in points:
        recs, seconds = [], 0.0
        for i in ids:
            task = "BDGP"[i % 4]
            res = run_task(st, cfg, generator, task, steps, sampler, [i], schedule, resample, for_report=False,
                           churn=churn)
            recs += next(iter(res["records"].values()))
            seconds += res["time_per_clip"]
        rows.append({"sampler": sampler, "schedule": schedule, "resample": resample, "churn": churn, "steps": steps,
                     "time_per_clip": seconds / max(1, len(ids)),
                     **{k: mean_ignore_nan([r[k] for r in recs])
                        for k in ("harmonic_norm", "rhythmic_norm", "audible_fraction", "empty", "level_db",
                                  "level_db_real")}})
    return rows


def reconstruction(st: RunState, cfg: EvalConfig, reconstruct: Callable[[np.ndarray], np.ndarray]) -> dict:
    """Mean VAE round-trip metrics per stem over the first `recon_n` segments in which that
    stem is audible (against silence, spectral convergence and SI-SDR mean nothing)."""
    out = {}
    for s in STEMS:
        recs = [reconstruction_metrics(seg.stems[s], reconstruct(seg.stems[s]), cfg.sample_rate, s,
                                       cfg.frame_rate_hz)
                for seg in st.segments[: cfg.recon_n] if not is_empty(seg.stems[s])]
        out[s] = {k: mean_ignore_nan([r[k] for r in recs]) for k in recs[0]} if recs else {}
    return out


def run_evaluation(generator: Generator, data_dir: str | Path, cfg: EvalConfig) -> tuple[dict, RunState]:
    """The whole evaluation; returns (metrics dict as written to metrics.json, run state)."""
    segments = load_segments(data_dir, cfg.n, cfg.seconds, cfg.sample_rate, cfg.split, cfg.seed,
                             use_annotation=cfg.use_annotation)
    if len(segments) < 2:
        raise ValueError(f"need at least 2 segments in {data_dir} ({cfg.split}), found {len(segments)}")
    kwargs = {"weights": cfg.embedding_weights} if cfg.embedding_weights else {}
    st = RunState(segments, [pick_mismatched(segments, i) for i in range(len(segments))],
                  build_embedding(cfg.embedding, **kwargs))
    real_mix = [st.embedding(seg.mixture, cfg.sample_rate) for seg in segments]
    real_stems = {s: [st.embedding(seg.stems[s], cfg.sample_rate) for seg in segments] for s in STEMS}
    metrics = {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()},
        "segments": [{"track": s.track, "offset": s.offset, "mismatched": segments[j].track if j >= 0 else None}
                     for s, j in zip(segments, st.mismatched)],
        "noise_floor": {"mixture": noise_floor(real_mix, cfg.seed),
                        **{s: noise_floor(real_stems[s], cfg.seed) for s in STEMS}},
        "tasks": evaluate_tasks(st, cfg, generator, real_mix, real_stems),
        "sweep": steps_sweep(st, cfg, generator) if cfg.sweep_steps and cfg.sweep_n else [],
    }
    rec = getattr(generator, "reconstruct", None)
    metrics["reconstruction"] = reconstruction(st, cfg, rec) if callable(rec) else None
    return metrics, st


def run_reconstruction(reconstruct: Callable[[np.ndarray], np.ndarray], data_dir: str | Path,
                       cfg: EvalConfig) -> tuple[dict, list[Segment]]:
    """The reconstruction section alone (a VAE before any denoiser): metrics over the first
    `recon_n` segments in which each stem is audible. Returns (metrics, the segments)."""
    segments = load_segments(data_dir, cfg.recon_n, cfg.seconds, cfg.sample_rate, cfg.split, cfg.seed,
                             use_annotation=cfg.use_annotation)
    st = RunState(segments, [], build_embedding("stats"))
    metrics = {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()},
               "segments": [{"track": s.track, "offset": s.offset} for s in segments],
               "reconstruction": reconstruction(st, cfg, reconstruct)}
    return metrics, segments
