"""Corpus statistics from the annotation.json files of a rendered corpus."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from ...config import STEMS

TEMPO_BIN = 10  # BPM per histogram bin


def _annotations(root: Path) -> list[dict]:
    """Returns every annotation.json under `root`/<split>/Track*/ (sorted by path)."""
    return [json.loads(p.read_text()) for p in sorted(Path(root).glob("*/Track*/annotation.json"))]


SILENT_RMS = 1e-5  # a stem file quieter than this (linear RMS, -100 dBFS) is silent


def silent_stems(root: Path, tracks: int) -> dict[str, dict[str, list[int]]]:
    """{stem: {soundfont: [silent files, files]}} over `tracks` tracks spread evenly over the
    corpus (every k-th in path order, so every split is sampled): the audio itself, so a
    soundfont that renders silence shows up."""
    import soundfile as sf

    out: dict[str, dict[str, list[int]]] = {s: {} for s in STEMS}
    paths = sorted(root.glob("*/Track*/annotation.json"))
    for ann_path in paths[:: max(1, len(paths) // tracks)][:tracks]:
        render = json.loads(ann_path.read_text()).get("render", {})
        for stem in STEMS:
            audio, _ = sf.read(ann_path.parent / f"{stem}.wav", dtype="float32")
            counts = out[stem].setdefault(render.get(stem, {}).get("soundfont", "?"), [0, 0])
            counts[0] += int(float((audio.astype("float64") ** 2).mean()) ** 0.5 < SILENT_RMS)
            counts[1] += 1
    return out


def corpus_statistics(root: str | Path, audio_tracks: int = 0) -> dict:
    """Returns statistics of the corpus at `root`.

    Keys: tracks, splits, styles, progressions, modes, keys (counts), tempo {min, max, mean,
    histogram {bin start: count}}, programs {stem: {program: count}}, parts {stem: {family: count}},
    bar_fraction {stem: fraction of all bars where the stem plays}, tracks_with_stem_absent_somewhere;
    with `audio_tracks` > 0 also silent_stems (`silent_stems` over that many tracks).
    """
    root = Path(root)
    anns = _annotations(root)
    splits = Counter(p.parent.parent.name for p in root.glob("*/Track*/annotation.json"))
    tempos = [float(a["tempo"]) for a in anns]
    bars_total = sum(len(a["bar_times"]) for a in anns)
    stats: dict = {
        "tracks": len(anns),
        "splits": dict(sorted(splits.items())),
        "styles": dict(Counter(a["style"] for a in anns).most_common()),
        "progressions": dict(Counter(a["progression"] for a in anns).most_common()),
        "modes": dict(Counter(a["key"]["mode"] for a in anns).most_common()),
        "keys": dict(Counter(a["key"]["name"] for a in anns).most_common()),
        "tempo": {
            "min": min(tempos, default=0.0), "max": max(tempos, default=0.0),
            "mean": sum(tempos) / max(len(tempos), 1),
            "histogram": dict(sorted(Counter(int(t // TEMPO_BIN * TEMPO_BIN) for t in tempos).items())),
        },
        "programs": {s: dict(sorted(Counter(a["programs"][s] for a in anns).items())) for s in STEMS},
        "parts": {s: dict(Counter(a.get("parts", {}).get(s, "?") for a in anns).most_common()) for s in STEMS},
        "bar_fraction": {s: sum(sum(a["active_bars"][s]) for a in anns) / max(bars_total, 1) for s in STEMS},
        "tracks_with_stem_absent_somewhere": {
            s: sum(not all(a["active_bars"][s]) for a in anns) for s in STEMS},
        "total_seconds": sum(float(a["duration"]) for a in anns),
    }
    if audio_tracks > 0:
        stats["silent_stems"] = silent_stems(root, audio_tracks)
    return stats


def format_statistics(stats: dict) -> str:
    """Returns a human-readable multi-line report of `corpus_statistics` output."""
    lines = [f"tracks: {stats['tracks']}  ({stats['total_seconds'] / 3600:.2f} h)  splits: {stats['splits']}"]
    for name in ("styles", "progressions", "modes"):
        lines.append(f"{name}: " + ", ".join(f"{k} {v}" for k, v in stats[name].items()))
    lines.append(f"keys ({len(stats['keys'])} distinct): "
                 + ", ".join(f"{k} {v}" for k, v in stats["keys"].items()))
    tempo = stats["tempo"]
    lines.append(f"tempo: {tempo['min']:.0f}-{tempo['max']:.0f} BPM, mean {tempo['mean']:.1f}")
    peak = max(tempo["histogram"].values(), default=1)
    for start, count in tempo["histogram"].items():
        lines.append(f"  {start:3d}-{start + TEMPO_BIN - 1:3d} {'#' * round(40 * count / peak)} {count}")
    for stem in STEMS:
        programs = ", ".join(f"{p}:{n}" for p, n in stats["programs"][stem].items())
        parts = ", ".join(f"{p} {n}" for p, n in stats["parts"][stem].items())
        lines.append(f"{stem:7s} plays {100 * stats['bar_fraction'][stem]:5.1f}% of bars, "
                     f"absent somewhere in {stats['tracks_with_stem_absent_somewhere'][stem]} tracks; "
                     f"programs {programs}; parts {parts}")
    for stem, fonts in stats.get("silent_stems", {}).items():
        lines.append(f"{stem:7s} silent files by soundfont: "
                     + ", ".join(f"{font} {silent}/{total}" for font, (silent, total) in sorted(fonts.items())))
    return "\n".join(lines)
