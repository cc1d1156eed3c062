"""A tiny, valid model bundle built by hand with `onnx.helper` (no torch, no exporter).

- encoder: Conv 1 -> C channels, kernel = stride = hop D (the rows of an orthonormal
  matrix, so decode(encode(x)) is the projection of x onto a C-dimensional subspace);
- denoiser: D(x; sigma) = x * sigma_data^2 / (sigma^2 + sigma_data^2) (the exact denoiser
  of N(0, sigma_data^2) data; sigma `[B]` broadcast with Reshape);
- decoder: ConvTranspose C -> 1 with the same weights (the transpose of the encoder).

`tiny_bundle` is the one fixture every server test uses: switch it to the real exported
`tiny` bundle here, and nowhere else.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

SAMPLE_RATE, HOP, C, WINDOW = 22050, 320, 80, 64
STEMS = ["bass", "drums", "guitar", "piano"]
SIGMA_DATA = 0.4


def _save(model, path: Path) -> str:
    import onnx
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _weights(seed: int = 0) -> np.ndarray:
    """`[C, 1, D]` orthonormal rows."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((HOP, C)))
    return q.T.reshape(C, 1, HOP).astype(np.float32)


def _conv_graph(name: str, transpose: bool, opset: int):
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(_weights(), "w")
    if transpose:
        inp = helper.make_tensor_value_info("latent", TensorProto.FLOAT, ["B", C, "T"])
        out = helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["B", 1, "N"])
        node = helper.make_node("ConvTranspose", ["latent", "w"], ["audio"], kernel_shape=[HOP], strides=[HOP])
    else:
        inp = helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["B", 1, "N"])
        out = helper.make_tensor_value_info("latent", TensorProto.FLOAT, ["B", C, "T"])
        node = helper.make_node("Conv", ["audio", "w"], ["latent"], kernel_shape=[HOP], strides=[HOP])
    graph = helper.make_graph([node], name, [inp], [out], initializer=[w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _denoiser_graph(opset: int):
    from onnx import TensorProto, helper, numpy_helper
    K = len(STEMS)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", K * C, "T"])
    sigma = helper.make_tensor_value_info("sigma", TensorProto.FLOAT, ["B"])
    out = helper.make_tensor_value_info("denoised", TensorProto.FLOAT, ["B", K * C, "T"])
    inits = [numpy_helper.from_array(np.array(SIGMA_DATA ** 2, np.float32), "sd2"),
             numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "shape")]
    nodes = [helper.make_node("Mul", ["sigma", "sigma"], ["s2"]),
             helper.make_node("Add", ["s2", "sd2"], ["den"]),
             helper.make_node("Div", ["sd2", "den"], ["scale"]),
             helper.make_node("Reshape", ["scale", "shape"], ["scale3"]),
             helper.make_node("Mul", ["x", "scale3"], ["denoised"])]
    graph = helper.make_graph(nodes, "denoiser", [x, sigma], [out], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def build_tiny_bundle(root: Path, window_frames: int = WINDOW, steps: int = 4, opset: int = 17) -> Path:
    """Write encoder/denoiser/decoder.onnx and manifest.json to `root`; returns `root`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, model in (("encoder", _conv_graph("encoder", False, opset)),
                        ("denoiser", _denoiser_graph(opset)),
                        ("decoder", _conv_graph("decoder", True, opset))):
        files[name] = {"path": f"{name}.onnx", "sha256": _save(model, root / f"{name}.onnx")}
    manifest = {
        "format_version": 1, "model_name": "handmade-tiny", "sample_rate": SAMPLE_RATE, "hop": HOP,
        "latent_dim": C, "stems": STEMS, "sigma_data": SIGMA_DATA, "window_frames": window_frames,
        "frame_multiple": 2, "opset": opset, "precision": "fp32",
        "sampler": {"sampler": "euler", "steps": steps, "schedule": "karras", "resample": 1, "resample_tmin": 0.0,
                    "resample_tmax": None, "sigma_min": 0.01, "sigma_max": 3.0, "rho": 7.0, "S_churn": 20.0, "S_tmin": 0.0, "S_tmax": None,
                    "S_noise": 1.0, "bass_given_reconstruction": 4.0, "bass_given_resample": 2,
                    "bass_drums_reconstruction_tmin": 1.0, "bass_drums_select": 2},
        "files": files,
        "io": {"encoder": {"input": "audio", "output": "latent"},
               "denoiser": {"inputs": ["x", "sigma"], "output": "denoised"},
               "decoder": {"input": "latent", "output": "audio"}},
        "provenance": {"config": {}, "training_data": "none: hand-built test graphs", "checkpoints": {}},
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """Path of a tiny bundle folder (session-wide; do not modify it in tests)."""
    return build_tiny_bundle(tmp_path_factory.mktemp("bundle"))


# ----------------------------------------------------------------------------- daemon + client

class Client:
    """A minimal DEALER client for tests (the real one is plugin_bridge.client)."""

    def __init__(self, endpoint: str, ctx=None, curve: tuple[bytes, bytes, bytes] | None = None,
                 ipv6: bool = False):
        import zmq
        self.ctx = ctx or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.IPV6, int(ipv6))
        if curve is not None:  # (server public, client public, client secret)
            self.sock.curve_serverkey, self.sock.curve_publickey, self.sock.curve_secretkey = curve
        self.sock.connect(endpoint)

    def send(self, header: dict, pcm=()) -> None:
        from plugin_bridge import protocol as P
        self.sock.send_multipart(P.encode(header, pcm))

    def send_raw(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def recv(self, timeout: float = 10.0):
        """Next message (heartbeats skipped); raises TimeoutError."""
        from plugin_bridge import protocol as P
        import time
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000)):
                raise TimeoutError("no message from the daemon")
            msg = P.decode(self.sock.recv_multipart(), incoming="s2c")
            if msg.type != "heartbeat":
                return msg

    def request(self, header: dict, pcm=(), timeout: float = 10.0):
        self.send(header, pcm)
        return self.recv(timeout)

    def run_job(self, header: dict, pcm=(), timeout: float = 30.0) -> "JobResult":
        self.send(header, pcm)
        return self.collect(header["job_id"], timeout)

    def collect(self, job_id: str, timeout: float = 30.0) -> "JobResult":
        """Messages of one job until its done / error."""
        res = JobResult(job_id)
        while True:
            m = self.recv(timeout)
            res.messages.append(m)
            if m.type in ("done", "error") and m.job_id == job_id:
                return res

    def close(self) -> None:
        self.sock.close(0)


class JobResult:
    def __init__(self, job_id: str):
        self.job_id, self.messages = job_id, []

    @property
    def final(self):
        return self.messages[-1]

    def of(self, type_: str) -> list:
        return [m for m in self.messages if m.type == type_]

    def stems(self, take: int = 0) -> dict[str, np.ndarray]:
        """stem -> concatenated chunk audio of one take (checks offsets are contiguous)."""
        from plugin_bridge import protocol as P
        out: dict[str, list[np.ndarray]] = {}
        for m in self.of("chunk"):
            if m.header["take"] != take:
                continue
            parts = out.setdefault(m.header["stem"], [])
            assert m.header["offset"] == sum(len(p) for p in parts), "chunk offsets not contiguous"
            parts.append(P.pcm_from_bytes(m.pcm[0]))
        return {s: np.concatenate(p) for s, p in out.items()}


def tone(seconds: float, rate: int, freq: float = 220.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    a = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return a if channels == 1 else np.stack([a, 0.5 * a], axis=1)


def gen_header(job_id: str, given: dict[str, np.ndarray], rate: int, generate: list[str], **kw) -> tuple[dict, list]:
    """A `generate` header + PCM list for `given` stem -> `[N]` or `[N, 2]` audio at `rate`."""
    g = [{"stem": s, "sample_rate": rate, "channels": 1 if a.ndim == 1 else a.shape[1], "frames": a.shape[0]}
         for s, a in given.items()]
    return {"type": "generate", "job_id": job_id, "given": g, "generate": generate, **kw}, list(given.values())


@pytest.fixture()
def daemon(tiny_bundle, tmp_path):
    """An in-process daemon on a free loopback port (small limits for the bad-input tests)."""
    from server.daemon import Daemon, DaemonConfig
    from server.requests import Limits
    cfg = DaemonConfig(bundle=tiny_bundle, zmq="tcp://127.0.0.1:0", heartbeat_s=0.2,
                       limits=Limits(max_message_bytes=8 * 1024 * 1024, max_region_seconds=120.0,
                                     max_queue=64, max_steps=2000))
    d = Daemon(cfg).start()
    try:
        yield d
    finally:
        d.stop()
