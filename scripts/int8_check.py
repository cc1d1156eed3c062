"""How far an int8 denoiser is from the fp32 one, and how fast it runs (docs/eval/model-history.md).

Records real denoiser inputs while the bundle generates on some clips of a split (as the
daemon does: total generation, then given drums and piano, then given bass and guitar; every
third call), quantizes `denoiser.onnx` with onnxruntime's `quantize_static` (convolutions only,
int8 weights per output channel, activation ranges at the 99.999th percentile of part of the
recorded inputs), and prints the median relative error of D(x) on the other inputs by noise
level, and the time per call of both graphs. With `--out`, writes a copy of the bundle whose
denoiser is the int8 graph, for `msldm eval --bundle OUT`. The variant that ran faster here
(`u8s8-keep`) lost rhythm in that evaluation, so bundles keep the fp32 graph.

    python scripts/int8_check.py --bundle msldm/assets/bundle --data ~/.cache/msldm/data/multi \
        --variant u8s8-keep --out /tmp/b-int8
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = {  # name -> (format, activation type, 7-bit weights, which convolutions stay fp32)
    "u8s8": ("QOperator", "QUInt8", False, "none"),
    "u8s8-keep": ("QOperator", "QUInt8", False, "last-skip"),
    "u8s8-7bit": ("QOperator", "QUInt8", True, "none"),
    "s8s8": ("QDQ", "QInt8", False, "none"),
    "s8s8-keep": ("QDQ", "QInt8", False, "skips-last3"),
}
BANDS = ((0.0, 0.05), (0.05, 0.3), (0.3, 1.0), (1.0, float("inf")))


def record(bundle_dir: Path, data: Path, split: str, clips: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
    from msldm.eval.data import load_segments
    from server.runtime import Bundle
    from server.windowing import generate_region

    bundle = Bundle.load(bundle_dir, providers=["CPUExecutionProvider"], threads=threads)
    xs, sig, calls, plain = [], [], [0], bundle.denoise

    def recording(x, sigma, given=None, mask=None):
        calls[0] += 1
        if calls[0] % 3 == 0:
            xs.extend(np.asarray(x, np.float32).copy())
            sig.extend([float(sigma)] * len(x))
        return plain(x, sigma, given, mask)

    bundle.denoise = recording
    for i, seg in enumerate(load_segments(data, clips, 12.0, split=split, seed=5)):
        n = len(seg.stems["bass"])
        for given_stems in ((), ("drums", "piano"), ("bass", "guitar")):
            given = {s: seg.stems[s] for s in given_stems}
            for _ in generate_region(bundle, given, [s for s in bundle.stems if s not in given], n, seed=100 + i,
                                     silent_retries=0):
                pass
        print(f"clip {i}: {len(xs)} inputs", flush=True)
    return np.stack(xs), np.array(sig, np.float32)


def quantize(src: Path, dst: Path, x: np.ndarray, sigma: np.ndarray, variant: str) -> list[str]:
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    fmt, act, seven_bit, keep_rule = VARIANTS[variant]
    model = onnx.load(str(src))
    producer = {o: n for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    skips = [n.name for n in convs if n.input[0] in producer and producer[n.input[0]].op_type == "Concat"]
    names = [n.name for n in convs]
    last_skip = names.index(skips[-1]) if skips else len(names)
    keep = {"none": [], "last-skip": names[last_skip:last_skip + 2],
            "skips-last3": sorted(set(skips + names[-3:]))}[keep_rule]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.i = 0

        def get_next(self):
            if self.i >= len(sigma):
                return None
            self.i += 1
            return {"x": x[self.i - 1:self.i], "sigma": sigma[self.i - 1:self.i]}

    quantize_static(str(src), str(dst), Reader(), quant_format=getattr(QuantFormat, fmt),
                    activation_type=getattr(QuantType, act), weight_type=QuantType.QInt8,
                    op_types_to_quantize=["Conv"], per_channel=True, reduce_range=seven_bit, nodes_to_exclude=keep,
                    calibrate_method=CalibrationMethod.Percentile, extra_options={"CalibPercentile": 99.999})
    return keep


def compare(ref_path: Path, q_path: Path, x: np.ndarray, sigma: np.ndarray, threads: int) -> dict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    ref, q = (ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for p in (ref_path, q_path))
    rel = []
    for i in range(len(sigma)):
        feeds = {"x": x[i:i + 1], "sigma": sigma[i:i + 1]}
        a, b = ref.run(None, feeds)[0], q.run(None, feeds)[0]
        rel.append(np.sqrt(np.mean((a - b) ** 2)) / max(np.sqrt(np.mean(a ** 2)), 1e-12))
    rel = np.array(rel)
    out = {f"sigma {lo:g}-{hi:g}": float(np.median(rel[(sigma >= lo) & (sigma < hi)]))
           for lo, hi in BANDS if ((sigma >= lo) & (sigma < hi)).any()}
    for name, sess in (("fp32", ref), ("int8", q)):
        for i in range(5):
            sess.run(None, {"x": x[i:i + 1], "sigma": sigma[i:i + 1]})
        reps = []
        for _ in range(3):
            t = time.perf_counter()
            for i in range(min(40, len(sigma))):
                sess.run(None, {"x": x[i:i + 1], "sigma": sigma[i:i + 1]})
            reps.append((time.perf_counter() - t) / min(40, len(sigma)) * 1e3)
        out[f"ms per call {name} (best of 3)"] = float(min(reps))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=Path("msldm/assets/bundle"))
    ap.add_argument("--data", type=Path, required=True, help="a corpus root (its --split is read)")
    ap.add_argument("--split", default="validation")
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--calibration", type=int, default=256, help="recorded inputs used for the ranges")
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="u8s8-keep")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, help="write a bundle copy with the int8 denoiser here")
    args = ap.parse_args()
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from export.manifest import write_manifest
    from msldm.hashing import sha256_file
    from server.runtime import BundleError, read_manifest

    try:
        manifest = read_manifest(args.bundle)  # the runtime's own check: fields and every file's sha256
    except BundleError as exc:
        raise SystemExit(f"int8_check: {exc}") from None
    if manifest["io"]["denoiser"]["inputs"] != ["x", "sigma"]:
        raise SystemExit("int8_check: only a joint denoiser (inputs x, sigma) is handled, not a conditional one")
    if args.out is not None and args.out.exists():
        raise SystemExit(f"int8_check: {args.out} exists; --out writes a new bundle folder")
    denoiser = manifest["files"]["denoiser"]["path"]
    x, sigma = record(args.bundle, args.data, args.split, args.clips, args.threads)
    if len(sigma) < args.calibration + 20:
        raise SystemExit(f"int8_check: {len(sigma)} inputs recorded; --calibration {args.calibration} needs at "
                         "least 20 more to judge the graph on (give more --clips)")
    order = np.random.default_rng(0).permutation(len(sigma))
    fit, held = order[:args.calibration], order[args.calibration:args.calibration + 200]
    with tempfile.TemporaryDirectory() as tmp:
        pre, q = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        here, src = os.getcwd(), args.bundle.resolve() / denoiser
        os.chdir(tmp)  # the pre-processing writes scratch files into the working folder
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        finally:
            os.chdir(here)
        keep = quantize(pre, q, x[fit], sigma[fit], args.variant)
        report = {"variant": args.variant, "kept_fp32": keep, "inputs": [len(fit), len(held)],
                  **compare(pre, q, x[held], sigma[held], args.threads)}
        print(json.dumps(report, indent=1))
        if args.out:  # built beside it and renamed whole: a failure leaves no half bundle
            part = args.out.with_name(args.out.name + ".part")
            shutil.rmtree(part, ignore_errors=True)
            try:
                shutil.copytree(args.bundle, part)
                shutil.copyfile(q, part / denoiser)
                manifest["files"]["denoiser"].update(sha256=sha256_file(part / denoiser),
                                                     bytes=(part / denoiser).stat().st_size)
                manifest["int8_check"] = report
                write_manifest(part, manifest)
                part.rename(args.out)
            except BaseException:
                shutil.rmtree(part, ignore_errors=True)
                raise
            print(f"wrote {args.out} (msldm eval --bundle {args.out} ...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
