"""scripts/int8_check.py on a small handmade convolution graph with a skip concatenation:
which convolutions each variant keeps fp32, that the int8 graph runs its convolutions in
int8, and that its error is measured against the fp32 graph (not against itself)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.script_loader import load_script

pytest.importorskip("onnxruntime.quantization")
onnx = pytest.importorskip("onnx")

CH, T = 8, 32


def _graph(path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def w(name, o, i, k):
        return numpy_helper.from_array((rng.standard_normal((o, i, k)) / np.sqrt(i * k)).astype(np.float32), name)

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, CH, T])
    sigma = helper.make_tensor_value_info("sigma", TensorProto.FLOAT, [1])
    out = helper.make_tensor_value_info("denoised", TensorProto.FLOAT, [1, CH, T])
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h1"], name="c1", pads=[1, 1]),
             helper.make_node("Relu", ["h1"], ["a1"], name="r1"),
             helper.make_node("Conv", ["a1", "w2"], ["h2"], name="c2", pads=[1, 1]),
             helper.make_node("Concat", ["h2", "x"], ["cat"], name="cat", axis=1),
             helper.make_node("Conv", ["cat", "w3"], ["h3"], name="skip", pads=[0, 0]),
             helper.make_node("Conv", ["h3", "w4"], ["h4"], name="up", pads=[1, 1]),
             helper.make_node("Conv", ["h4", "w5"], ["h5"], name="head", pads=[1, 1]),
             helper.make_node("Mul", ["h5", "sigma"], ["denoised"], name="scale")]
    inits = [w("w1", CH, CH, 3), w("w2", CH, CH, 3), w("w3", CH, 2 * CH, 1), w("w4", CH, CH, 3), w("w5", CH, CH, 3)]
    graph = helper.make_graph(nodes, "toy", [x, sigma], [out], initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


@pytest.fixture
def inputs():
    rng = np.random.default_rng(1)
    return rng.standard_normal((48, CH, T)).astype(np.float32), rng.uniform(0.1, 2.0, 48).astype(np.float32)


@pytest.mark.parametrize("variant,kept", [("u8s8", []), ("u8s8-keep", ["skip", "up"]),
                                          ("s8s8-keep", ["head", "skip", "up"])])
def test_variants_keep_the_named_convolutions_fp32(tmp_path, inputs, variant, kept):
    mod = load_script("int8_check")
    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    _graph(src)
    x, sigma = inputs
    assert sorted(mod.quantize(src, dst, x[:32], sigma[:32], variant)) == sorted(kept)
    nodes = onnx.load(str(dst)).graph.node
    producer = {o: n.op_type for n in nodes for o in n.output}
    # fp32: a Conv reading a float tensor; int8: QLinearConv (QOperator) or a Conv reading
    # DequantizeLinear outputs (QDQ, fused by onnxruntime at load)
    plain = [n.name.removesuffix("_quant") for n in nodes
             if n.op_type == "Conv" and producer.get(n.input[0]) != "DequantizeLinear"]
    assert sorted(plain) == sorted(kept)
    if variant.startswith("u8s8"):
        assert [n.op_type for n in nodes].count("QLinearConv") == 5 - len(kept)
    report = mod.compare(src, dst, x[32:], sigma[32:], threads=1)
    errors = [v for k, v in report.items() if k.startswith("sigma")]
    assert errors and all(0 < e < 0.5 for e in errors)  # int8 differs from fp32, within reason
    same = mod.compare(src, src, x[32:], sigma[32:], threads=1)
    assert all(v == 0 for k, v in same.items() if k.startswith("sigma"))


def test_a_bundle_that_fails_its_check_or_an_existing_out_stops_before_any_work(tmp_path, monkeypatch) -> None:
    from tests.server_fixtures import build_tiny_bundle

    mod = load_script("int8_check")
    monkeypatch.setattr(mod, "record", lambda *a, **k: pytest.fail("recorded before the checks"))
    bundle = build_tiny_bundle(tmp_path / "b")
    (tmp_path / "empty").mkdir()
    for argv, words in ((["--bundle", str(tmp_path / "empty")], "not a model bundle"),
                        (["--bundle", str(bundle), "--out", str(bundle)], "exists")):
        monkeypatch.setattr("sys.argv", ["int8_check", "--data", str(tmp_path), *argv])
        with pytest.raises(SystemExit) as err:
            mod.main()
        assert words in str(err.value)
    assert not list(tmp_path.glob("*.part"))
