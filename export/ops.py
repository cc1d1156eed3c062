"""TensorRT operator allow-list: which ONNX operators a graph uses, and whether TensorRT's
ONNX parser (onnx-tensorrt, TensorRT 10.x, `docs/operators.md`, rows marked "Y") takes them.

The list is ours, written from that support matrix; operators TensorRT's parser lacks (for
example Bernoulli, BitShift, Col2Im, ConvInteger, Det, MatMulInteger, Multinomial, the
Sequence / Optional / String operators, Unique) are simply absent from it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TENSORRT_OPS: frozenset[str] = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
Cast Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum
DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten
Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
Greater GreaterOrEqual GridSample GroupNormalization GRU HardSigmoid HardSwish Hardmax
Identity If InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual
Log LogSoftmax Loop LpNormalization LpPool LRN LSTM MatMul Max MaxPool Mean Min Mish Mod Mul
Neg NonMaxSuppression NonZero Not OneHot Or Pad Pow PRelu QuantizeLinear RandomNormal
RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2
ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round ScatterElements
ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign
SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu
Unsqueeze Where Xor
""".split())
"""Operators (default ONNX domain) that TensorRT 10's ONNX parser supports."""


class UnsupportedOperatorError(ValueError):
    """A graph uses an operator outside `TENSORRT_OPS` (or outside the default domain)."""


def operator_counts(model) -> Counter:
    """`{op_type: count}` over the main graph and every subgraph of an `onnx.ModelProto`.
    Operators of a non-default domain are keyed `domain::op_type`."""
    counts: Counter = Counter()

    def visit(graph) -> None:
        for node in graph.node:
            key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
            counts[key] += 1
            for attr in node.attribute:
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    visit(sub)

    visit(model.graph)
    return counts


def unsupported_operators(model, allowed: frozenset[str] = TENSORRT_OPS) -> list[str]:
    """Sorted operator names of `model` that are not in `allowed`."""
    return sorted(op for op in operator_counts(model) if op not in allowed)


def check_tensorrt_ops(model_or_path, name: str = "graph") -> Counter:
    """Raise `UnsupportedOperatorError` if the graph uses an operator TensorRT cannot parse;
    returns the operator counts otherwise."""
    import onnx

    model = model_or_path
    if isinstance(model_or_path, (str, Path)):
        model = onnx.load(str(model_or_path), load_external_data=False)
    bad = unsupported_operators(model)
    if bad:
        raise UnsupportedOperatorError(f"{name} uses operators TensorRT's ONNX parser lacks: {bad}")
    return operator_counts(model)
