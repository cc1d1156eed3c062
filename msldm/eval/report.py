"""Writing an evaluation run: report.md, metrics.json, spectrogram PNGs and the judged audio."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from msldm import wavio
from msldm.eval.dsp import mel_spectrogram
from msldm.eval.generators import Generator
from msldm.eval.pipeline import EvalConfig, RunState, run_evaluation
from msldm.eval.tables import STEMS, TOTAL, subfad_table, subset_stems

_BUNDLES = "the bundle's"  # a config value of None: the bundle's default

EMBEDDING_NOTE = {
    "stats": ("Frechet distances use the built-in `stats` embedding (log-mel, chroma, spectral "
              "contrast and onset-strength statistics per 1 s window). They are NOT comparable "
              "to the paper's VGGish FAD values; compare only runs made with the same embedding."),
    "vggish": "Frechet distances use VGGish embeddings (0.96 s patches) from the given ONNX file.",
}


def _clean(obj: object) -> object:
    """JSON-safe copy: NaN / inf -> None, numpy scalars -> Python."""
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _f(v: object, digits: int = 2) -> str:
    return "-" if v is None or not isinstance(v, (int, float)) or not math.isfinite(v) else f"{v:.{digits}f}"


def _pm(m: Mapping, key: str) -> str:
    """`mean ± standard error` where the metrics hold the error (older metrics files: the mean)."""
    se = m.get(f"{key}_se")
    return _f(m.get(key)) + (f" ± {_f(se)}" if isinstance(se, float) and math.isfinite(se) else "")


def _fit_table(tasks: Mapping[str, Mapping]) -> list[str]:
    lines = ["| Task | Stem | harmonic (raw / real / mism) | harmonic norm (pooled) | rhythmic (raw / real / mism) "
             "| rhythmic norm (pooled) | audible | empty rate | notes / s | pitch range | comb share (real) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for task, entry in tasks.items():
        for stem, m in entry["stems"].items():
            harm = f"{_f(m.get('harmonic'))} / {_f(m.get('harmonic_real'))} / {_f(m.get('harmonic_mismatched'))}"
            rhy = f"{_f(m.get('rhythmic'))} / {_f(m.get('rhythmic_real'))} / {_f(m.get('rhythmic_mismatched'))}"
            rng = f"{_f(m.get('pitch_low'), 0)}-{_f(m.get('pitch_high'), 0)}" if "pitch_low" in m else "-"
            lines.append(f"| {task} | {stem} | {harm} | {_pm(m, 'harmonic_norm')} ({_f(m.get('harmonic_norm_pooled'))}) "
                         f"| {rhy} | {_pm(m, 'rhythmic_norm')} ({_f(m.get('rhythmic_norm_pooled'))}) | "
                         f"{_f(m.get('audible_fraction'))} | "
                         f"{_f(m.get('empty_rate'))} | {_f(m.get('notes_per_s'), 1)} | {rng} | "
                         f"{_f(m.get('comb_share'))} ({_f(m.get('comb_share_real'))}) |")
    return lines


def _total_section(metrics: Mapping) -> list[str]:
    tasks, nf = metrics["tasks"], metrics["noise_floor"]
    if TOTAL not in tasks:
        return []
    fad = tasks[TOTAL].get("fad_stems", {})
    lines = ["## Total generation FAD (the paper's Fig. 2)", "",
             "| | " + " | ".join(STEMS) + " | mixture |", "|---" * (len(STEMS) + 2) + "|",
             "| generated | " + " | ".join(_f(fad.get(s)) for s in STEMS) + f" | {_f(tasks[TOTAL]['subfad'])} |",
             "| noise floor (real half vs half) | " + " | ".join(_f(nf.get(s)) for s in STEMS)
             + f" | {_f(nf.get('mixture'))} |", ""]
    return lines


def _sweep_section(rows: list[Mapping]) -> list[str]:
    if not rows:
        return []
    lines = ["## Steps sweep", "",
             "| sampler | schedule | resample | churn | steps | s / clip | harmonic norm | rhythmic norm | audible | empty rate "
             "| level dBFS (real) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        churn = "bundle's" if r.get("churn") is None else _f(r["churn"], 1)
        lines.append(f"| {r['sampler']} | {r.get('schedule', 'karras')} | {r.get('resample', 1)} | {churn} | {r['steps']} | "
                     f"{_f(r['time_per_clip'], 3)} | "
                     f"{_f(r['harmonic_norm'])} | "
                     f"{_f(r['rhythmic_norm'])} | {_f(r['audible_fraction'])} | {_f(r['empty'])} | "
                     f"{_f(r.get('level_db', float('nan')), 1)} ({_f(r.get('level_db_real', float('nan')), 1)}) |")
    return lines + [""]


def _recon_section(recon: Mapping | None) -> list[str]:
    if not recon:
        return []
    keys = ("note_f1", "chroma_cos", "onset_f1", "comb_share", "comb_share_ref", "logmel_l1", "stft_sc",
            "stft_logmag", "si_sdr")
    lines = ["## VAE reconstruction (encode -> decode)", "",
             "note F1: Basic Pitch transcriptions of original and reconstruction (onset only, 50 ms); "
             "onset F1 for drums; comb share: share of note time at the latent frame-rate pitch "
             "(reconstruction, and the original's as `comb_share_ref`).", "",
             "| stem | " + " | ".join(keys) + " |",
             "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {s} | " + " | ".join(_f(m.get(k)) for k in keys) + " |" for s, m in recon.items()]
    return lines + [""]


def render_report(metrics: Mapping, model_name: str = "model",
                  baselines: Mapping[str, Mapping[str, float]] | None = None,
                  figures: list[str] | None = None) -> str:
    """The markdown report of a metrics dict (as returned by `run_evaluation`)."""
    cfg, tasks = metrics["config"], metrics["tasks"]
    rows = {model_name: {t: e["subfad"] for t, e in tasks.items()}, **(baselines or {})}
    lines = [f"# Evaluation report: {model_name}", "",
             f"{len(metrics['segments'])} segments of {cfg['seconds']} s from split `{cfg['split']}`; "
             f"sampler {cfg['sampler']}, schedule {cfg.get('schedule', 'karras')}, {cfg['steps']} steps "
             f"x {cfg.get('resample') or _BUNDLES} takes; "
             f"seed {cfg['seed']}" + (f", draw {cfg['draw']}" if cfg.get("draw") else "") + "."
             + (f" Level of the generated stems: {cfg['level']} (`server.levels`)." if "level" in cfg else ""), "",
             EMBEDDING_NOTE.get(cfg["embedding"], ""), "",
             "## Sub-FAD for partial generation (layout of the paper's Table 2; lower is better)", "",
             "Letters name the generated stems (BD: bass and drums generated, guitar and piano given).", "",
             subfad_table(rows), "", f"Noise floor (two halves of the real mixtures): "
             f"{_f(metrics['noise_floor'].get('mixture'))}.", ""]
    lines += _total_section(metrics)
    lines += ["## Fit and density per task and generated stem", "",
              "Normalised fit: 1.0 = the real stem of that track, 0.0 = a real stem of another track "
              "in another key and tempo (see `msldm/eval/fit.py`). Each norm column gives the mean of the "
              "clips' normalised fits ± its standard error, and in brackets the pooled value, the same "
              "normalisation of the mean scores, which one clip with a small real-vs-mismatched gap cannot "
              "sway.", ""] + _fit_table(tasks) + [""]
    lines += _sweep_section(metrics.get("sweep", [])) + _recon_section(metrics.get("reconstruction"))
    if figures:
        lines += ["## Examples", ""] + [f"![{Path(f).stem}]({f})" for f in figures] + [""]
    return "\n".join(lines)


def save_example(out_dir: Path, st: RunState, cfg: EvalConfig, task: str, i: int,
                 generated: Mapping[str, np.ndarray]) -> str:
    """Write the generated / real stems and mixture of one example as WAV and a PNG of
    their log-mel spectrograms (rows: stems, columns: real | generated). Returns the PNG path
    relative to `out_dir`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seg, sr = st.segments[i], cfg.sample_rate
    adir = out_dir / "audio" / task
    adir.mkdir(parents=True, exist_ok=True)
    mix = np.sum([generated.get(s, seg.stems[s]) for s in STEMS], axis=0)
    for s, a in generated.items():
        wavio.write_wav_atomic(adir / f"{i:03d}_{s}.wav", a, sr, "16")
    wavio.write_wav_atomic(adir / f"{i:03d}_mixture.wav", mix, sr, "16")
    targets = list(subset_stems(task))
    fig, axes = plt.subplots(len(targets), 2, figsize=(10, 2.2 * len(targets)), squeeze=False)
    for row, s in enumerate(targets):
        for col, (label, a) in enumerate((("real", seg.stems[s]), ("generated", generated[s]))):
            mel = 10 * np.log10(mel_spectrogram(a, sr, 2048, 512, 80) + 1e-10)
            axes[row, col].imshow(mel, origin="lower", aspect="auto", vmin=mel.max() - 80, vmax=mel.max(),
                                  extent=(0, len(a) / sr, 0, 80))
            axes[row, col].set_title(f"{s} ({label})", fontsize=9)
    fig.tight_layout()
    fdir = out_dir / "figures"
    fdir.mkdir(exist_ok=True)
    png = fdir / f"{task}_{i:03d}.png"
    wavio.atomic_write(png, lambda f: fig.savefig(f, dpi=80, format="png"))
    plt.close(fig)
    return str(png.relative_to(out_dir))


def write_report(generator: Generator, data_dir: str | Path, out_dir: str | Path, cfg: EvalConfig,
                 model_name: str = "model",
                 baselines: Mapping[str, Mapping[str, float]] | None = None) -> dict:
    """Run the evaluation and write report.md, metrics.json, figures/*.png, audio/**.wav
    under `out_dir`. `baselines`: row name -> {task: sub-FAD} for Table 2. Returns metrics."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics, st = run_evaluation(generator, data_dir, cfg)
    if hasattr(generator, "silent_retries"):  # the bundle generator: what its daemon-side retries did
        metrics["silent_retries"] = generator.silent_retries
        metrics["silent_rerolls"] = generator.rerolls
    figures = [save_example(out, st, cfg, task, i, gen) for (task, i), gen in sorted(st.examples.items())]
    wavio.write_json_atomic(out / "metrics.json", _clean(metrics))  # type: ignore[arg-type]
    text = render_report(metrics, model_name, baselines, figures)
    wavio.atomic_write(out / "report.md", lambda f: f.write(text.encode("utf-8")))
    return metrics


def write_reconstruction_report(reconstruct, data_dir: str | Path, out_dir: str | Path, cfg: EvalConfig,
                                model_name: str = "vae") -> dict:
    """`run_reconstruction` written as report.md + metrics.json under `out_dir`. Returns metrics."""
    from msldm.eval.pipeline import run_reconstruction

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics, segments = run_reconstruction(reconstruct, data_dir, cfg)
    wavio.write_json_atomic(out / "metrics.json", _clean(metrics))  # type: ignore[arg-type]
    figures = []
    for stem in ("bass", "piano"):
        figures += _reconstruction_example(out, stem, segments, cfg, reconstruct)
    text = "\n".join([f"# Reconstruction report: {model_name}", "",
                      f"{len(metrics['segments'])} segments of {cfg.seconds} s from split `{cfg.split}`.", ""]
                     + _recon_section(metrics["reconstruction"])
                     + ["## Spectrograms (0-3 kHz; a decoder comb shows as lines every 69 Hz)", ""]
                     + [f"![{Path(f).stem}]({f})" for f in figures] + [""])
    wavio.atomic_write(out / "report.md", lambda f: f.write(text.encode("utf-8")))
    return metrics


def _reconstruction_example(out_dir: Path, stem: str, segments: list, cfg: EvalConfig,
                            reconstruct) -> list[str]:
    """Original and reconstruction of the first segment where `stem` is audible: two WAVs and a
    PNG of their linear-frequency log spectrograms. Returns the PNG path (relative), or []."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from msldm.eval.density import is_empty
    from msldm.eval.dsp import stft_mag

    seg = next((g for g in segments if not is_empty(g.stems[stem])), None)
    if seg is None:
        return []
    sr, original = cfg.sample_rate, seg.stems[stem]
    pair = (("original", original), ("reconstruction", reconstruct(original)))
    adir = out_dir / "audio"
    adir.mkdir(exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2), squeeze=False)
    for col, (label, a) in enumerate(pair):
        wavio.write_wav_atomic(adir / f"{stem}_{label}.wav", a, sr, "16")
        mag = 20 * np.log10(stft_mag(a, 4096, 512) + 1e-7)
        top = int(3000 / (sr / 4096))
        axes[0, col].imshow(mag[:top], origin="lower", aspect="auto", vmin=mag.max() - 80, vmax=mag.max(),
                            extent=(0, len(a) / sr, 0, 3000))
        axes[0, col].set_title(f"{stem} {label} ({seg.track})", fontsize=9)
        axes[0, col].set_ylabel("Hz")
    fig.tight_layout()
    fdir = out_dir / "figures"
    fdir.mkdir(exist_ok=True)
    png = fdir / f"reconstruction_{stem}.png"
    wavio.atomic_write(png, lambda f: fig.savefig(f, dpi=80, format="png"))
    plt.close(fig)
    return [str(png.relative_to(out_dir))]


def load_baseline(path: str | Path) -> dict[str, float]:
    """{task: sub-FAD} from another run's metrics.json (a baseline row of Table 2)."""
    tasks = json.loads(Path(path).read_text())["tasks"]
    return {t: (float("nan") if e["subfad"] is None else e["subfad"]) for t, e in tasks.items()}


COMPARE_STEM_KEYS = ("harmonic_norm", "rhythmic_norm", "harmonic_norm_pooled", "rhythmic_norm_pooled",
                     "harmonic", "rhythmic", "audible_fraction", "empty_rate", "notes_per_s", "comb_share",
                     "comb_share_real")
COMPARE_RECON_KEYS = ("note_f1", "chroma_cos", "onset_f1", "comb_share", "logmel_l1", "stft_sc", "si_sdr")


def flatten_metrics(metrics: Mapping) -> dict[str, float]:
    """Every comparable number of a metrics.json as {"section / row / measure": value}."""
    flat: dict[str, float] = {}
    for task, entry in metrics.get("tasks", {}).items():
        flat[f"{task} / sub-FAD"] = entry.get("subfad")
        flat[f"{task} / s per clip"] = entry.get("time_per_clip")
        for stem, m in entry.get("stems", {}).items():
            for k in COMPARE_STEM_KEYS:
                if k in m:
                    flat[f"{task} / {stem} / {k}"] = m[k]
    for stem, m in (metrics.get("reconstruction") or {}).items():
        for k in COMPARE_RECON_KEYS:
            if k in m:
                flat[f"reconstruction / {stem} / {k}"] = m[k]
    return flat


def _same_clips(a: Mapping, b: Mapping) -> bool:
    """True when two metrics.json scored the same segments with the same seed and length."""
    return a.get("segments") == b.get("segments") and all(
        a.get("config", {}).get(k) == b.get("config", {}).get(k) for k in ("seed", "seconds"))


def _mean_sd(values: Sequence[float | None]) -> str:
    """`mean ± sd (lo-hi)` of the finite values (one value: itself; none: "-")."""
    v = [float(x) for x in values if isinstance(x, (int, float)) and math.isfinite(x)]
    if len(v) < 2:
        return _f(v[0], 3) if v else "-"
    return f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f} ({min(v):.3f}-{max(v):.3f})"


def compare_table(runs: Mapping[str, Mapping | Sequence[Mapping]]) -> str:
    """Markdown table, one row per measure and one column per run (`{name: metrics}`); a measure
    missing from a run is "-". A run given as several metrics (draws of the same clips,
    `msldm eval --draw`) shows `mean ± sd (min-max)` over them; draws of other clips raise
    ValueError."""
    draws = {name: list(m) if isinstance(m, Sequence) else [m] for name, m in runs.items()}
    for name, ms in draws.items():
        if not all(_same_clips(ms[0], m) for m in ms[1:]):
            raise ValueError(f"{name}: its metrics were not run on the same clips (segments, seed, seconds)")
    flats = {name: [flatten_metrics(m) for m in ms] for name, ms in draws.items()}
    keys: list[str] = []
    for fs in flats.values():
        for f in fs:
            keys += [k for k in f if k not in keys]
    header = [name + (f" ({len(fs)} draws)" if len(fs) > 1 else "") for name, fs in flats.items()]
    lines = ["| measure | " + " | ".join(header) + " |", "|---" * (len(flats) + 1) + "|"]
    lines += [f"| {k} | " + " | ".join(_mean_sd([f.get(k) for f in fs]) for fs in flats.values()) + " |"
              for k in keys]
    return "\n".join(lines)


def paired_table(runs: Mapping[str, Mapping]) -> str:
    """Markdown table of every per-clip measure of the later runs minus the first, pair by pair
    over the clips both scored: mean ± standard error of the differences (`paired_difference`)
    and, in brackets, the number of pairs when some clip lacked a value in either run. The
    runs must share clips and seeds: a run whose segments (tracks and offsets) or seed differ
    from the first's raises ValueError. A measure one of them lacks is "-"."""
    from msldm.eval.pipeline import paired_difference

    names = list(runs)
    base = runs[names[0]]
    for name in names[1:]:
        if not _same_clips(runs[name], base):
            raise ValueError(f"{name} was not run on {names[0]}'s clips (segments, seed and seconds must match)")
    lines = [f"| measure (minus {names[0]}) | " + " | ".join(names[1:]) + " |", "|---" * len(names) + "|"]
    for task, entry in base.get("tasks", {}).items():
        for stem, fields in entry.get("per_clip", {}).items():
            for k, a in fields.items():
                cells = []
                for name in names[1:]:
                    b = runs[name].get("tasks", {}).get(task, {}).get("per_clip", {}).get(stem, {}).get(k)
                    if b is None or len(b) != len(a):
                        cells.append("-")
                        continue
                    m, se, n = paired_difference(a, b)
                    cells.append(f"{_f(m, 3)} ± {_f(se, 3)}" + ("" if n == len(a) else f" ({n} pairs)"))
                lines.append(f"| {task} / {stem} / {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
