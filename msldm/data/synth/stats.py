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


def corpus_statistics(root: str | Path) -> dict:
    """Returns statistics of the corpus at `root`.

    Keys: tracks, splits, styles, progressions, modes, keys (counts), tempo {min, max, mean,
    histogram {bin start: count}}, programs {stem: {program: count}}, parts {stem: {family: count}},
    bar_fraction {stem: fraction of all bars where the stem plays}, tracks_with_stem_absent_somewhere.
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
    return "\n".join(lines)
