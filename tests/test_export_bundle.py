"""Export of the tiny preset to a model bundle: manifest, graphs, parity, fp16, half storage,
the TensorRT operator allow-list, and the torch-free runtime on the exported bundle."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export.graphs import build_graph_modules
from export.manifest import GRAPHS, ManifestError, verify_bundle
from export.onnx_export import ExportOptions, export_bundle
from export.ops import TENSORRT_OPS, UnsupportedOperatorError, check_tensorrt_ops
from export.parity import (ParityError, check_bundle, generation_error, graph_errors,
                           load_cpu_bundle, random_checkpoints)
from msldm.checkpoint import load_diffusion, load_vae
from msldm.pipeline import TorchPipeline

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(parity_frames=(4, 10), parity_steps=3)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> tuple[Path, Path]:
    torch.set_num_threads(1)
    return random_checkpoints("tiny", tmp_path_factory.mktemp("ckpt"), seed=0)


@pytest.fixture(scope="module")
def bundle_dir(ckpts, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "tiny"
    export_bundle(*ckpts, out, ExportOptions(**FAST))
    return out


@pytest.fixture(scope="module")
def pipe(ckpts) -> TorchPipeline:
    return TorchPipeline.from_checkpoints(*ckpts)


def test_manifest_follows_the_contract(bundle_dir, ckpts):
    m = verify_bundle(bundle_dir)
    assert m["format_version"] == 1 and m["model_name"] == "tiny"
    assert (m["sample_rate"], m["hop"], m["latent_dim"]) == (22050, 320, 80)
    assert m["stems"] == ["bass", "drums", "guitar", "piano"]
    assert m["sigma_data"] == 0.4 and m["window_frames"] == 64 and m["frame_multiple"] == 2
    assert m["opset"] >= 17 and m["precision"] == "fp32" and m["weights_storage"] == "fp32"
    assert m["sampler"]["S_tmax"] is None and m["sampler"]["steps"] == 8
    assert m["io"]["denoiser"] == {"inputs": ["x", "sigma"], "output": "denoised"}
    prov = m["provenance"]
    assert prov["config"]["diffusion"]["unet"]["channels"] == [32, 64]
    assert "random" in prov["training_data"]
    assert len(prov["checkpoints"]["vae"]["sha256"]) == 64
    json.loads((bundle_dir / "manifest.json").read_text(), parse_constant=pytest.fail)


def test_tampered_file_fails_verification(bundle_dir, tmp_path):
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(bundle_dir, bad)
    with open(bad / "encoder.onnx", "ab") as f:
        f.write(b"x")
    with pytest.raises(ManifestError, match="sha256"):
        verify_bundle(bad)


def test_graphs_are_checked_dynamic_and_weight_norm_free(bundle_dir):
    for g in GRAPHS:
        model = onnx.load(str(bundle_dir / f"{g}.onnx"))
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version >= 17
        for value in list(model.graph.input) + list(model.graph.output):
            dims = value.type.tensor_type.shape.dim
            assert dims[0].dim_param == "B", (g, value.name)
            if len(dims) == 3:
                assert dims[2].dim_param, f"{g}.{value.name}: time axis is not dynamic"
        names = [i.name for i in model.graph.initializer]
        assert not [n for n in names if "parametrizations" in n or "original" in n]
        assert "Identity" not in {n.op_type for n in model.graph.node}


def test_graph_parity_fp32_several_lengths(bundle_dir, pipe):
    bundle = load_cpu_bundle(bundle_dir)
    errs = graph_errors(bundle, pipe, frames=(2, 6, 14, 30), seed=5)
    assert all(e < 1e-4 for e in errs.values()), errs
    assert bundle.encode(np.zeros((3, 1, 8 * 320), np.float32)).shape == (3, 80, 8)


def test_partial_generation_matches_pytorch_pipeline(bundle_dir, pipe):
    bundle = load_cpu_bundle(bundle_dir)
    err = generation_error(bundle, pipe, T=16, steps=6, seed=7)
    assert err["latent_rel_l2"] < 1e-3 and err["audio_rel_l2"] < 1e-3, err


def test_parity_check_catches_a_wrong_model(bundle_dir, ckpts):
    vae, cfg, _ = load_vae(ckpts[0])
    den, _, _, stats = load_diffusion(ckpts[1])
    modules = build_graph_modules(vae, den, stats)
    with torch.no_grad():
        modules.edm.unet.stem.weight.mul_(1.01)  # a 1 % error in one layer
    with pytest.raises(ParityError):
        check_bundle(bundle_dir, modules, cfg, ExportOptions(**FAST))


def test_fp16_variant_keeps_sensitive_parts_fp32(ckpts, tmp_path):
    rep = export_bundle(*ckpts, tmp_path / "b16", ExportOptions(fp16=True, **FAST))
    assert rep.precision == "fp16"
    assert 0 < rep.parity["generation_audio_rel_l2"] < 5e-2, rep.parity
    model = onnx.shape_inference.infer_shapes(onnx.load(str(tmp_path / "b16" / "denoiser.onnx")))
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    for node in model.graph.node:
        first = types.get(node.input[0]) if node.input else None
        if node.op_type in ("InstanceNormalization", "Softmax") or "/embed/" in node.name:
            assert first in (FLOAT, None) or node.op_type == "Cast", node.name
    convs = [types.get(n.input[0]) for n in model.graph.node if n.op_type == "Conv"]
    assert FLOAT16 in convs
    assert types["x"] == FLOAT and types["denoised"] == FLOAT


def test_half_storage_halves_files_and_keeps_parity(ckpts, bundle_dir, tmp_path):
    opts = ExportOptions(half_storage="auto", size_limit_mb=0.1, **FAST)  # tiny exceeds 0.1 MB
    rep = export_bundle(*ckpts, tmp_path / "half", opts)
    assert rep.weights_storage == "fp16" and rep.precision == "fp32"
    full = sum((bundle_dir / f"{g}.onnx").stat().st_size for g in GRAPHS)
    assert sum(rep.sizes.values()) < 0.7 * full
    assert rep.parity["denoiser_max_abs"] < 1e-4
    assert 0 < rep.parity["vs_unrounded_latent_rel_l2"] < 1e-2
    model = onnx.load(str(tmp_path / "half" / "denoiser.onnx"))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    bundle = load_cpu_bundle(tmp_path / "half")  # computes in fp32
    assert bundle.denoise(np.ones((1, 320, 4), np.float32), 1.0).dtype == np.float32


def test_operators_are_tensorrt_supported(bundle_dir):
    for g in GRAPHS:
        ops = check_tensorrt_ops(bundle_dir / f"{g}.onnx", g)
        assert "Conv" in ops and set(ops) <= TENSORRT_OPS


def test_unsupported_operator_is_refused():
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])
    graph = helper.make_graph([helper.make_node("Unique", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedOperatorError, match="Unique"):
        check_tensorrt_ops(model, "handmade")


BLOCK_TORCH = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, Block())
"""


def test_runtime_generates_without_torch(bundle_dir):
    code = BLOCK_TORCH + """
import numpy as np
from server.runtime import Bundle
b = Bundle.load(sys.argv[1], providers=["CPUExecutionProvider"])
T = 8
given = np.zeros((1, b.K * b.C, T), np.float32)
given[:, :b.C] = b.encode(np.random.default_rng(0).standard_normal((1, 1, T * b.D)).astype(np.float32))
z = b.generate((1, b.K * b.C, T), seed=1, given=given, mask=b.stem_mask(["bass"], T))
audio = b.decode(z[:, b.C:2 * b.C])
assert audio.shape == (1, 1, T * b.D) and np.isfinite(audio).all()
assert not [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
import export.cli, msldm.bench  # the CLI modules import nothing heavy either
print("ok", b.providers)
"""
    r = subprocess.run([sys.executable, "-c", code, str(bundle_dir)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr


def test_cli_export(ckpts, tmp_path, capsys):
    from export.cli import register
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["export", "--vae", str(ckpts[0]), "--diffusion", str(ckpts[1]),
                              "--out", str(tmp_path / "cli"), "--half-storage", "never"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "InstanceNormalization" in out and "generation_audio_rel_l2" in out
    verify_bundle(tmp_path / "cli")


def test_cli_export_sets_sampler_defaults_in_the_manifest(ckpts, tmp_path):
    from export.cli import register
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    base = ["export", "--vae", str(ckpts[0]), "--diffusion", str(ckpts[1]), "--half-storage", "never"]
    args = parser.parse_args(base + ["--out", str(tmp_path / "s"), "--sampler", "S_tmin=0.1",
                                     "--sampler", "steps=3"])
    assert args.func(args) == 0
    sampler = json.loads((tmp_path / "s" / "manifest.json").read_text())["sampler"]
    checkpoint = load_diffusion(ckpts[1])[1].sampler
    assert sampler["S_tmin"] == 0.1 and sampler["steps"] == 3 and isinstance(sampler["steps"], int)
    assert sampler["S_churn"] == checkpoint.S_churn and sampler["rho"] == checkpoint.rho  # the rest kept
    for bad, message in (("S_tmn=0.1", "unknown sampler field"), ("steps=2.5", "needs a int"),
                         ("S_tmin", "FIELD=VALUE"), ("sampler=ddim", "unknown sampler"),
                         ("S_noise=nan", "NaN")):
        args = parser.parse_args(base + ["--out", str(tmp_path / "bad"), "--sampler", bad])
        with pytest.raises(ValueError, match=message):
            args.func(args)
    assert not (tmp_path / "bad" / "manifest.json").exists()
    # a balance table rides along from another bundle's manifest (or a file of the block itself)
    src = tmp_path / "other.json"
    table = {"source": "t", "offsets_db": {"guitar": {"bass+piano": -1.5}}}
    src.write_text(json.dumps({"stems": ["bass", "drums", "guitar", "piano"], "level_balance": table}))
    args = parser.parse_args(base + ["--out", str(tmp_path / "lb"), "--level-balance", str(src)])
    assert args.func(args) == 0
    assert json.loads((tmp_path / "lb" / "manifest.json").read_text())["level_balance"] == table
    verify_bundle(tmp_path / "lb")
    src.write_text(json.dumps({"offsets_db": {"guitar": {"guitar": 0.0}}}))
    args = parser.parse_args(base + ["--out", str(tmp_path / "bad"), "--level-balance", str(src)])
    with pytest.raises(ValueError, match="level-balance .*guitar.guitar"):
        args.func(args)
    assert not (tmp_path / "bad" / "manifest.json").exists()


def test_a_denoiser_with_channel_filters_exports_with_parity(ckpts, tmp_path):
    import dataclasses

    from export.parity import jitter_zero_weights
    from msldm.checkpoint import save_checkpoint
    from msldm.edm import EDMDenoiser
    from msldm.train.runs import warm_start_conditional

    vae_path, diff_path = ckpts
    den, cfg, meta, stats = load_diffusion(diff_path)
    d = cfg.diffusion
    cfg = dataclasses.replace(cfg, diffusion=dataclasses.replace(d, unet=dataclasses.replace(d.unet, channel_filters=2)))
    filtered = EDMDenoiser(cfg.diffusion).eval()
    warm_start_conditional(filtered, den.state_dict())
    jitter_zero_weights(filtered, seed=9)  # the filters' gains too: parity must see them work
    assert float(filtered.unet.filters.gain.weight.detach().abs().sum()) > 0
    path = save_checkpoint(tmp_path / "diffusion.safetensors", "diffusion", cfg, filtered, extra=stats, meta=meta)
    out = tmp_path / "bundle"
    export_bundle(vae_path, path, out, ExportOptions(**FAST))
    bundle = load_cpu_bundle(out)
    errs = graph_errors(bundle, TorchPipeline.from_checkpoints(vae_path, path), frames=(2, 6), seed=3)
    assert all(e < 1e-4 for e in errs.values()), errs
    check_tensorrt_ops(str(out / "denoiser.onnx"))
