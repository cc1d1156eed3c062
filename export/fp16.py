"""Graph rewrites on `onnx.ModelProto`: tidy-up, half-precision storage, and the fp16 variant.

- `drop_identities`: the TorchScript exporter de-duplicates equal initializers and leaves
  `Identity` nodes behind; consumers are rewired to the source instead.
- `store_initializers_half`: large fp32 initializers whose values are exactly fp16 numbers are
  stored as fp16 and turned back into fp32 by a `Cast` at the top of the graph (onnxruntime
  constant-folds it when the session loads), so inference stays fp32 and the file halves.
- `convert_float16`: the fp16 variant. Every node computes in fp16 except the numerically
  sensitive ones (`keep_fp32(node)`: norms, softmax, the sigma embedding, the EDM
  preconditioning and whatever lies outside the network body), with `Cast`s inserted where
  the precision changes. Graph inputs and outputs stay fp32, so the bundle's IO contract
  is the same for both precisions.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

FLOAT, FLOAT16 = 1, 10  # onnx.TensorProto.FLOAT / FLOAT16
SENSITIVE_OPS = frozenset({"InstanceNormalization", "GroupNormalization", "LayerNormalization",
                           "BatchNormalization", "Softmax", "LogSoftmax", "ReduceMean", "Log",
                           "Exp", "Sqrt", "Reciprocal", "Div"})
"""Operators that always run in fp32 in the fp16 variant."""
FIXED_FP32_INPUTS: dict[str, frozenset[int]] = {"Resize": frozenset({1, 2})}
"""Inputs whose type the operator fixes to fp32 whatever the data type (roi, scales)."""
BODY_PREFIXES = ("/denoiser/unet/", "/encoder/", "/decoder/")
"""Node-name prefixes (TorchScript exporter scopes) of the network bodies that may run in fp16."""
FP32_SCOPES = ("/embed/",)
"""Scopes inside a body that stay fp32 (the sigma embedding)."""


def drop_identities(model) -> int:
    """Remove `Identity` nodes that do not produce a graph output. Returns how many."""
    outputs = {o.name for o in model.graph.output}
    alias = {n.output[0]: n.input[0] for n in model.graph.node
             if n.op_type == "Identity" and n.output[0] not in outputs}
    keep = [n for n in model.graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for node in keep:
        for i, name in enumerate(node.input):
            while name in alias:
                name = alias[name]
            node.input[i] = name
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return len(alias)


def store_initializers_half(model, min_numel: int = 1024) -> int:
    """Store fp32 initializers with >= `min_numel` elements that fp16 represents exactly as
    fp16 plus a `Cast` to fp32 (lossless). Returns the number of tensors converted."""
    from onnx import helper, numpy_helper

    casts, n = [], 0
    for init in model.graph.initializer:
        if init.data_type != FLOAT:
            continue
        w = numpy_helper.to_array(init)
        if w.size < min_numel or not np.array_equal(w.astype(np.float16).astype(np.float32), w):
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(w.astype(np.float16), f"{name}__fp16"))
        casts.append(helper.make_node("Cast", [f"{name}__fp16"], [name], to=FLOAT,
                                      name=f"{name}__cast_fp32"))
        n += 1
    nodes = casts + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return n


def keep_fp32(node) -> bool:
    """True for nodes the fp16 variant computes in fp32."""
    if node.op_type in SENSITIVE_OPS:
        return True
    if not node.name.startswith(BODY_PREFIXES):
        return True
    return any(scope in node.name for scope in FP32_SCOPES)


def convert_float16(model, keep: Callable = keep_fp32):
    """The fp16 variant of an fp32 `onnx.ModelProto` (a new model; see the module docstring)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types = _elem_types(inferred)
    g = inferred.graph
    conv = _Converter(types, {i.name: i for i in g.initializer})
    nodes = []
    for node in g.node:
        nodes += conv.rewrite(node, FLOAT if keep(node) else FLOAT16)
    nodes += conv.fix_outputs(nodes, [o.name for o in g.output])
    out = onnx.ModelProto()
    out.CopyFrom(inferred)
    del out.graph.node[:], out.graph.value_info[:], out.graph.initializer[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(conv.initializers())
    return out


def _elem_types(model) -> dict[str, int]:
    g = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(g.input) + list(g.value_info) + list(g.output)}
    types.update({i.name: i.data_type for i in g.initializer})
    return types


class _Converter:
    """Tracks each float tensor's current precision and inserts casts on demand."""

    def __init__(self, types: dict[str, int], inits: dict):
        self.types, self.inits = types, inits
        self.current: dict[str, int] = {k: v for k, v in types.items() if v in (FLOAT, FLOAT16)}
        self.cast_cache: dict[tuple[str, int], str] = {}
        self.new_inits: dict[str, object] = {}
        self.used_inits: set[str] = set()

    def _as(self, name: str, dtype: int, out: list) -> str:
        """Name of `name` in precision `dtype` (casting or converting an initializer)."""
        if not name or self.current.get(name) in (None, dtype):
            if name in self.inits:
                self.used_inits.add(name)
            return name
        key = (name, dtype)
        if key not in self.cast_cache:
            new = f"{name}__as{'16' if dtype == FLOAT16 else '32'}"
            if name in self.inits:
                from onnx import numpy_helper
                arr = numpy_helper.to_array(self.inits[name])
                npd = np.float16 if dtype == FLOAT16 else np.float32
                self.new_inits[new] = numpy_helper.from_array(arr.astype(npd), new)
            else:
                from onnx import helper
                out.append(helper.make_node("Cast", [name], [new], to=dtype, name=f"{new}__cast"))
            self.cast_cache[key] = new
        return self.cast_cache[key]

    def rewrite(self, node, dtype: int) -> list:
        """The node (and any casts it needs) computing in `dtype` on its float tensors."""
        out: list = []
        fixed = FIXED_FP32_INPUTS.get(node.op_type, frozenset())
        for i, name in enumerate(node.input):
            node.input[i] = self._as(name, FLOAT if i in fixed else dtype, out)
        if dtype == FLOAT16:
            _retype_attributes(node)
        for name in node.output:
            if self.types.get(name) in (FLOAT, FLOAT16):
                self.current[name] = dtype
        if node.op_type == "Cast":  # a Cast's output type is its `to`, not the node's precision
            to = next(a.i for a in node.attribute if a.name == "to")
            self.current[node.output[0]] = to if to in (FLOAT, FLOAT16) else self.current.pop(
                node.output[0], None)
        return out + [node]

    def fix_outputs(self, nodes: list, names: list[str]) -> list:
        """Graph outputs left in fp16: the producer writes `<name>__fp16`, a Cast restores
        fp32 under the output's own name. Returns the casts to append."""
        from onnx import helper
        renames = {n: f"{n}__fp16" for n in names if self.current.get(n) == FLOAT16}
        for node in nodes:
            for field in (node.input, node.output):
                for i, name in enumerate(field):
                    field[i] = renames.get(name, name)
        return [helper.make_node("Cast", [new], [old], to=FLOAT, name=f"{old}__out")
                for old, new in renames.items()]

    def initializers(self) -> list:
        kept = [self.inits[n] for n in self.inits if n in self.used_inits]
        return kept + list(self.new_inits.values())


def _retype_attributes(node) -> None:
    """fp32 tensors in attributes (Constant, ConstantOfShape) and Cast targets -> fp16."""
    from onnx import numpy_helper
    for attr in node.attribute:
        if attr.name == "to" and node.op_type == "Cast" and attr.i == FLOAT:
            attr.i = FLOAT16
        elif attr.HasField("t") and attr.t.data_type == FLOAT:
            attr.t.CopyFrom(numpy_helper.from_array(
                numpy_helper.to_array(attr.t).astype(np.float16), attr.t.name))
