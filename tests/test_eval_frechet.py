"""Frechet distance, embeddings (built-in stats, VGGish from an ONNX file) and Table 2 layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from msldm.eval.embeddings import StatsEmbedding, VGGishOnnxEmbedding, build_embedding, vggish_patches
from msldm.eval.frechet import frechet_audio_distance, frechet_from_embeddings, noise_floor
from msldm.eval.tables import parse_subsets, partial_subsets, subfad_table
from msldm.eval.toy import synth_track

SR = 22050


def test_frechet_of_gaussians() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4000, 8))
    assert frechet_from_embeddings(a, a) == pytest.approx(0.0, abs=1e-6)
    # N(0, I) vs N(m, 4 I): |m|^2 + D (1 + 4 - 2 * 2) = |m|^2 + D
    b = 2.0 * rng.standard_normal((4000, 8)) + 1.0
    assert frechet_from_embeddings(a, b) == pytest.approx(8.0 + 8.0, rel=0.1)


def test_frechet_singular_covariance_is_finite() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((10, 50)), rng.standard_normal((12, 50))  # n < D: singular
    fd = frechet_from_embeddings(a, b)
    assert np.isfinite(fd) and fd > 0


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    keys = [(120.0, 0, "major"), (97.0, 6, "major"), (140.0, 9, "minor"), (108.0, 3, "minor")]
    out = []
    for i, (tempo, tonic, mode) in enumerate(keys):
        stems, _ = synth_track(tempo, tonic, mode, 4.0, SR, seed=i)
        out.append(sum(stems.values()).astype(np.float32))
    return out


def test_fad_self_zero_and_monotonic_in_noise(clips: list[np.ndarray]) -> None:
    emb = StatsEmbedding(window_s=0.5)
    real = np.concatenate([emb(c, SR) for c in clips])
    assert real.shape[1] == emb.dim
    assert frechet_from_embeddings(real, real) == pytest.approx(0.0, abs=1e-6)
    rng = np.random.default_rng(0)
    noise = [rng.standard_normal(len(c)).astype(np.float32) for c in clips]
    dists = [frechet_audio_distance([c + lvl * n for c, n in zip(clips, noise)], clips, SR, emb)
             for lvl in (0.001, 0.01, 0.05, 0.2)]
    assert all(d2 > d1 for d1, d2 in zip(dists, dists[1:])), dists
    assert np.isfinite(noise_floor([emb(c, SR) for c in clips]))


def test_vggish_needs_a_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="weights"):
        build_embedding("vggish")
    with pytest.raises(FileNotFoundError):
        VGGishOnnxEmbedding(tmp_path / "missing.onnx")
    with pytest.raises(KeyError):
        build_embedding("nope")


def test_vggish_onnx_loading_path(tmp_path: Path, clips: list[np.ndarray]) -> None:
    """A random-weight stand-in with VGGish's interface: [n, 1, 96, 64] -> [n, 128]."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((96 * 64, 128)).astype(np.float32) * 0.01, "w")
    shape = numpy_helper.from_array(np.array([-1, 96 * 64], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["input", "shape"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["mm"]), helper.make_node("Relu", ["mm"], ["embedding"])],
        "vggish_stand_in", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 1, 96, 64])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", 128])], [w, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "vggish.onnx"
    onnx.save(model, str(path))
    emb = build_embedding("vggish", weights=str(path))
    out = emb(clips[0], SR)  # 4 s -> 4 patches of 0.96 s
    assert vggish_patches(clips[0], SR).shape == (4, 96, 64)
    assert out.shape == (4, 128) and np.all(out >= 0)
    assert frechet_audio_distance(clips[:2], clips[:2], SR, emb) == pytest.approx(0.0, abs=1e-6)


def test_table2_layout() -> None:
    cols = partial_subsets()
    assert cols == ["B", "D", "G", "P", "BD", "BG", "BP", "DG", "DP", "GP", "BDG", "BDP", "BGP", "DGP"]
    assert parse_subsets("all")[-1] == "BDGP" and parse_subsets("gb, d") == ["BG", "D"]
    paper_msldm = [0.24, 1.27, 0.38, 0.32, 1.22, 0.81, 0.64, 1.00, 0.92, 0.98, 1.44, 1.57, 1.48, 1.43]
    md = subfad_table({"MSLDM": dict(zip(cols, paper_msldm)), "partial": {"B": 0.5}})
    lines = md.splitlines()
    assert lines[0].startswith("| Model | B | D | G | P | BD |") and "| Overall | BDGP (total) |" in lines[0]
    assert "| 0.98 | - |" in lines[2]  # Overall = mean of the 14, as in the paper (0.98)
    assert lines[3].startswith("| partial | 0.50 | - |")
