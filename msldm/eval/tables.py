"""Partial-generation tasks and the sub-FAD table laid out as Table 2 of the MSLDM paper."""

from __future__ import annotations

from itertools import combinations
from typing import Mapping, Sequence

import numpy as np

from msldm.config import STEMS

LETTERS: dict[str, str] = {"bass": "B", "drums": "D", "guitar": "G", "piano": "P"}
TOTAL = "BDGP"


def subset_name(stems: Sequence[str]) -> str:
    """'BD' for ("bass", "drums"): letters in the paper's B D G P order."""
    return "".join(LETTERS[s] for s in STEMS if s in stems)


def subset_stems(name: str) -> tuple[str, ...]:
    """Inverse of `subset_name`: 'BD' -> ("bass", "drums")."""
    by_letter = {v: k for k, v in LETTERS.items()}
    if not name or any(c not in by_letter for c in name.upper()):
        raise ValueError(f"bad subset {name!r}: use letters of {''.join(LETTERS.values())}")
    return tuple(s for s in STEMS if LETTERS[s] in name.upper())


def partial_subsets() -> list[str]:
    """The 14 partial-generation tasks in Table 2's column order: B D G P BD BG BP DG DP GP
    BDG BDP BGP DGP (the letters name the *generated* stems, the rest are given)."""
    return [subset_name(c) for k in (1, 2, 3) for c in combinations(STEMS, k)]


def parse_subsets(spec: str) -> list[str]:
    """'all' -> the 14 partial tasks + BDGP (total generation); 'partial' -> the 14;
    otherwise comma-separated names like 'B,DG,BDGP'."""
    if spec == "all":
        return partial_subsets() + [TOTAL]
    if spec == "partial":
        return partial_subsets()
    return [subset_name(subset_stems(s.strip())) for s in spec.split(",") if s.strip()]


def _fmt(v: float | None) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.2f}"


def subfad_table(rows: Mapping[str, Mapping[str, float]]) -> str:
    """Markdown table in the layout of Table 2 of the MSLDM paper.

    rows: model name -> {subset name: sub-FAD}. Columns: the 14 partial tasks, 'Overall'
    (mean of the available partial tasks, as in the paper, where it is the mean of the 14)
    and, beyond the paper's table, 'BDGP' (total generation, mixture FAD; the paper's
    Fig. 2). Missing entries print '-'.
    """
    cols = partial_subsets()
    head = "| Model | " + " | ".join(cols) + " | Overall | BDGP (total) |"
    sep = "|" + "---|" * (len(cols) + 3)
    lines = [head, sep]
    for model, vals in rows.items():
        partial = [vals.get(c, float("nan")) for c in cols]
        finite = [v for v in partial if v is not None and np.isfinite(v)]
        overall = float(np.mean(finite)) if finite else float("nan")
        cells = [_fmt(v) for v in partial] + [_fmt(overall), _fmt(vals.get(TOTAL))]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
