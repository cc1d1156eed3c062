"""Is take i of a batch the take a one-take request with seed + i makes, on a real bundle?
Prints the relative RMS difference per take (float rounding of batched inference only).

    .venv/bin/python scripts/takes_check.py --bundle msldm/assets/bundle --takes 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.runtime import Bundle  # noqa: E402
from server.windowing import generate_region  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="msldm/assets/bundle")
    ap.add_argument("--takes", type=int, default=3)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=6.0)
    args = ap.parse_args(argv)
    b = Bundle.load(args.bundle)
    sr = b.sample_rate
    n = int(args.seconds * sr)
    t = np.arange(n) / sr
    given = {"piano": (0.2 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * t) > 0)).astype(np.float32),
             "drums": (0.2 * np.random.default_rng(0).standard_normal(n) * (np.sin(2 * np.pi * 4 * t) > 0.95)
                       ).astype(np.float32)}

    def run(seed: int, takes: int) -> dict[int, np.ndarray]:
        out: dict[int, list[np.ndarray]] = {}
        for p in generate_region(b, given, ["bass"], n, seed=seed, takes=takes):
            out.setdefault(p.take, []).append(p.stems["bass"])
        return {k: np.concatenate(v) for k, v in out.items()}

    batch = run(args.seed, args.takes)
    for k in range(args.takes):
        alone = run(args.seed + k, 1)[0]
        d = batch[k] - alone
        print(f"take {k} (seed {args.seed + k}): max abs difference {np.abs(d).max():.2e}, relative RMS "
              f"{np.sqrt(np.mean(d ** 2)) / np.sqrt(np.mean(alone ** 2)):.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
