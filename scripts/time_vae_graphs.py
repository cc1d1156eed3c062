"""Time a bundle's SourceVAE graphs through onnxruntime, and the two STFT implementations in
PyTorch: encode + decode of 4 stems x 12 s (the numbers in docs/eval/spectral-vae-reconstruction.md).

    .venv/bin/python scripts/time_vae_graphs.py msldm/assets/bundle [OTHER_BUNDLE ...]

To time the convolution-STFT graphs of before 2026-12-02: `git worktree add /tmp/old 4c0d7c2`
and pass `/tmp/old/msldm/assets/bundle`. Run it on idle cores (medians of 5 calls).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from msldm.stft import ConvISTFT, ConvSTFT, FactorisedISTFT, FactorisedSTFT  # noqa: E402
from server.runtime import Bundle  # noqa: E402


def median_time(fn, n: int = 5) -> float:
    fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv: list[str]) -> int:
    x = (0.1 * np.random.default_rng(0).standard_normal((4, 1, 12 * 22050))).astype(np.float32)
    print("| bundle | encode (s) | decode (s) | together (s) |\n|---|---|---|---|")
    for root in argv or ["msldm/assets/bundle"]:
        b = Bundle.load(root)
        z = b.encode(x)
        enc, dec = median_time(lambda: b.encode(x)), median_time(lambda: b.decode(z))
        print(f"| {root} | {enc:.3f} | {dec:.3f} | {enc + dec:.3f} |")
    torch.set_num_threads(1)
    xt = torch.from_numpy(np.pad(x, ((0, 0), (0, 0), (0, (-x.shape[-1]) % 320))))
    with torch.no_grad():
        conv, fact = ConvSTFT(1280, 320, 480), FactorisedSTFT(1280, 320, 480)
        re, im = conv(xt)
        iconv, ifact = ConvISTFT(1280, 320, 480), FactorisedISTFT(1280, 320, 480)
        print("\nPyTorch, one thread: STFT convolution %.3f s, factorised %.3f s; inverse convolution %.3f s, "
              "factorised %.3f s" % (median_time(lambda: conv(xt)), median_time(lambda: fact(xt)),
                                     median_time(lambda: iconv(re, im)), median_time(lambda: ifact(re, im))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
