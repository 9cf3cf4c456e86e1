#!/usr/bin/env python3
"""Generate small ONNX test models that mimic what torch.onnx.export produces.

Models are built with onnx.helper (torch is not needed) in an opset 13 and an opset 17
variant each, with torch-style node / value names ("/layer1/layer1.0/conv1/Conv",
"/Constant_output_0", "layer1.0.conv1.weight"), weights as initializers and small
constants (shapes, axes, scalars) as Constant nodes, value_info from shape inference:

  resnet_opN        ResNet-style CNN: Conv + BatchNormalization (unfused) + Relu, residual
                    Add, MaxPool, GlobalAveragePool, Flatten, Gemm. BN statistics are
                    calibrated on synthetic images so activations have trained-like ranges.
  mobilenet_opN     MobileNetV2/V3-style CNN: depthwise (grouped) Conv, BN folded into Conv
                    (as the exporter's constant folding does), Clip(0, 6) as relu6 with
                    min/max inputs, HardSwish (opset 17) / x*HardSigmoid(x) (opset 13, as
                    torch exports hardswish below opset 14), HardSigmoid, squeeze-excite
                    with ReduceMean + Conv + Sigmoid/HardSigmoid + Mul.
  bert_opN          2-layer BERT-style encoder (HF transformers export): int64 input_ids /
                    attention_mask / token_type_ids [batch_size, sequence_length], Gather
                    embeddings, Range/Expand position ids (with the exporter's
                    ConstantOfShape/Mul/Equal/Where shape pattern), LayerNormalization
                    (opset 17) or its ReduceMean/Sub/Pow/Add/Sqrt/Div decomposition (opset
                    13), MatMul+Add QKV, Shape/Gather/Unsqueeze/Concat dynamic Reshape to
                    heads, Transpose, Div by sqrt(d), additive mask (Unsqueeze/Cast/Sub/Mul
                    at opset 13, masked_fill-style Cast/Where at opset 17), Softmax,
                    Erf-based GELU, Tanh pooler. A few LayerNorm gammas are large to
                    reproduce BERT's outlier activation channels.
  lstm_opN          batch-first input -> Transpose -> bidirectional LSTM (initial states
                    built with ConstantOfShape from the dynamic batch size) -> Transpose /
                    Reshape -> forward LSTM -> last step -> Gemm. sequence_lens omitted.
  gru_opN           the same with GRU (linear_before_reset=1, as torch exports it) and no
                    initial states.
  control_flow_opN  If (then/else branches reading outer-scope values), a Loop with a
                    constant trip count, loop-carried state, scan outputs and a nested If
                    that reads values of both enclosing scopes, and a while-style Loop
                    (empty trip count, data-dependent condition).
  detector_opN      detector-like net: strided Conv backbone, FPN with Resize nearest
                    (constant scales) and linear (sizes from Shape/Slice/Concat), Concat,
                    DB-style head with two ConvTranspose + Sigmoid, YOLO-style head with
                    Split, Slice (including the INT64_MAX end torch emits), Exp, Transpose,
                    Reshape.

For every model OUT_DIR gets <name>.onnx, <name>.input.npz (scripts/make_inputs.py data:
synthetic images, token ids with padded attention masks, smooth sequences; batch size
--batch) and <name>.expected.npz (ONNX Runtime CPU outputs keyed by output name), plus
OUT_DIR/models.json describing them. Every model passes
onnx.checker.check_model(full_check=True). Weights come from a fixed numpy seed per model
family (the op13 and op17 variants share weights, so their outputs agree).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":  # started with another interpreter: re-run with the project venv
    _venv = Path(__file__).resolve().parent.parent / ".venv"
    if (_venv / "bin" / "python").exists() and Path(sys.prefix).resolve() != _venv.resolve():
        os.execv(str(_venv / "bin" / "python"), [str(_venv / "bin" / "python"), *sys.argv])

import argparse
import contextlib
import json
import math
import zlib
from collections import defaultdict

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_inputs import build_inputs  # noqa: E402
from npzio import save_npz  # noqa: E402
from ort_run import run_model  # noqa: E402

IR_FOR_OPSET = {13: 7, 17: 8}
F32 = TensorProto.FLOAT
I64 = TensorProto.INT64
INT64_MAX = np.iinfo(np.int64).max


# ---------------------------------------------------------------------------------------
# graph builder with torch-exporter-like naming
# ---------------------------------------------------------------------------------------


class Builder:
    """Accumulates nodes / initializers; names nodes like the TorchScript ONNX exporter."""

    def __init__(self, rng: np.random.Generator, opset: int, shared=None):
        self.rng = rng
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        # name counters shared with sub-builders so every value name is unique model-wide
        self.counts = shared if shared is not None else defaultdict(int)
        self.scopes: list[str] = []
        self.bn_nodes: list[str] = []  # BatchNormalization node names (for calibration)

    def sub(self) -> "Builder":
        b = Builder(self.rng, self.opset, self.counts)
        b.scopes = list(self.scopes)
        return b

    @contextlib.contextmanager
    def scope(self, *names: str):
        self.scopes.extend(names)
        try:
            yield
        finally:
            del self.scopes[len(self.scopes) - len(names):]

    def _node_name(self, op: str) -> str:
        base = "/" + "/".join(self.scopes + [op]) if self.scopes else f"/{op}"
        n = self.counts[base]
        self.counts[base] += 1
        return base if n == 0 else f"{base}_{n}"

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs):
        name = self._node_name(op_type)
        outs = [f"{name}_output_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, **attrs))
        if op_type == "BatchNormalization":
            self.bn_nodes.append(name)
        return outs[0] if n_out == 1 else outs

    def const(self, value, dtype=None) -> str:
        arr = np.asarray(value, dtype=dtype)
        name = self._node_name("Constant")
        out = f"{name}_output_0"
        self.nodes.append(helper.make_node("Constant", [], [out], name=name,
                                           value=numpy_helper.from_array(arr)))
        return out

    def i64(self, *vals) -> str:
        return self.const(np.array(vals, np.int64))

    def init(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def normal(self, name: str, shape, std: float, mean: float = 0.0) -> str:
        return self.init(name, (mean + std * self.rng.standard_normal(shape)).astype(np.float32))

    def uniform(self, name: str, shape, lo: float, hi: float) -> str:
        return self.init(name, self.rng.uniform(lo, hi, size=shape).astype(np.float32))

    # -- composite layers -----------------------------------------------------------

    def conv(self, x: str, prefix: str, cin: int, cout: int, k: int, s: int = 1, p: int | None = None,
             groups: int = 1, bias: bool = True, gain: float = 2.0) -> str:
        p = k // 2 if p is None else p
        fan_in = cin // groups * k * k
        w = self.normal(f"{prefix}.weight", (cout, cin // groups, k, k), math.sqrt(gain / fan_in))
        ins = [x, w]
        if bias:
            ins.append(self.normal(f"{prefix}.bias", (cout,), 0.05))
        return self.op("Conv", ins, dilations=[1, 1], group=groups, kernel_shape=[k, k],
                       pads=[p, p, p, p], strides=[s, s])

    def bn(self, x: str, prefix: str, c: int) -> str:
        g = self.uniform(f"{prefix}.weight", (c,), 0.6, 1.4)
        b = self.normal(f"{prefix}.bias", (c,), 0.1)
        m = self.init(f"{prefix}.running_mean", np.zeros(c, np.float32))
        v = self.init(f"{prefix}.running_var", np.ones(c, np.float32))
        return self.op("BatchNormalization", [x, g, b, m, v], epsilon=1e-5, momentum=0.9)

    def linear(self, x: str, prefix: str, fin: int, fout: int, std: float | None = None) -> str:
        """nn.Linear on a >2-D input: MatMul with the transposed weight + Add bias."""
        std = std if std is not None else 1.0 / math.sqrt(fin)
        w = self.normal(f"onnx::MatMul_{prefix}", (fin, fout), std)
        b = self.normal(f"{prefix}.bias", (fout,), 0.02)
        y = self.op("MatMul", [x, w])
        return self.op("Add", [b, y])

    def gemm(self, x: str, prefix: str, fin: int, fout: int) -> str:
        w = self.normal(f"{prefix}.weight", (fout, fin), 1.0 / math.sqrt(fin))
        b = self.normal(f"{prefix}.bias", (fout,), 0.02)
        return self.op("Gemm", [x, w, b], alpha=1.0, beta=1.0, transB=1)

    def unsqueeze(self, x: str, axes: list[int]) -> str:
        return self.op("Unsqueeze", [x, self.i64(*axes)])

    def squeeze(self, x: str, axes: list[int]) -> str:
        return self.op("Squeeze", [x, self.i64(*axes)])

    def dim(self, x: str, i: int) -> str:
        """torch's x.size(i): Shape -> Gather(scalar index) (an int64 scalar)."""
        shape = self.op("Shape", [x])
        return self.op("Gather", [shape, self.const(np.array(i, np.int64))], axis=0)


def vinfo(name: str, elem: int, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def finish(b: Builder, name: str, inputs, outputs, doc: str) -> onnx.ModelProto:
    graph = helper.make_graph(b.nodes, "main_graph", inputs, outputs, initializer=b.inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_operatorsetid("", b.opset)],
        ir_version=IR_FOR_OPSET[b.opset], producer_name="kvant-make_test_models",
        producer_version="1", doc_string=doc,
    )
    model.graph.doc_string = name
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)


# ---------------------------------------------------------------------------------------
# BatchNorm calibration / folding (gives the random nets trained-like activation ranges)
# ---------------------------------------------------------------------------------------


def calibrate_bn(model: onnx.ModelProto, feeds: dict[str, np.ndarray], rng: np.random.Generator) -> None:
    """Sets every BN's running mean/var to the statistics of its input on `feeds`
    (jittered a little), layer by layer, in place."""
    import onnxruntime as ort

    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    inits = {t.name: t for t in model.graph.initializer}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for n in bns:
        if n.input[0] not in known:
            probe.graph.output.append(helper.make_empty_tensor_value_info(n.input[0]))
            known.add(n.input[0])
    jitter = {n.name: (rng.uniform(0.85, 1.2, size=1), rng.normal(0, 0.02, size=1)) for n in bns}
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    for _ in range(len(bns) + 1):  # layer k is exact after k passes
        for n in bns:
            for idx in (3, 4):
                probe_t = next(t for t in probe.graph.initializer if t.name == n.input[idx])
                probe_t.CopyFrom(inits[n.input[idx]])
        sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
        names = [n.input[0] for n in bns]
        vals = dict(zip(names, sess.run(names, feeds)))
        changed = 0.0
        for n in bns:
            x = vals[n.input[0]].astype(np.float64)
            axes = (0,) + tuple(range(2, x.ndim))
            mean, var = x.mean(axis=axes), x.var(axis=axes)
            js, jm = jitter[n.name]
            mean = mean + jm * np.sqrt(var)
            var = var * js
            old = numpy_helper.to_array(inits[n.input[3]])
            changed = max(changed, float(np.max(np.abs(old - mean))))
            inits[n.input[3]].CopyFrom(numpy_helper.from_array(mean.astype(np.float32), n.input[3]))
            inits[n.input[4]].CopyFrom(numpy_helper.from_array(np.maximum(var, 1e-4).astype(np.float32), n.input[4]))
        if changed < 1e-6:
            break


def fold_bn(model: onnx.ModelProto) -> onnx.ModelProto:
    """Folds Conv -> BatchNormalization pairs into the Conv (as torch's export does in eval
    mode with do_constant_folding) and drops the BN initializers."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    uses = defaultdict(int)
    for n in g.node:
        for i in n.input:
            uses[i] += 1
    rename, drop_nodes, drop_inits = {}, set(), set()
    for bn in [n for n in g.node if n.op_type == "BatchNormalization"]:
        conv = producers.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or uses[bn.input[0]] != 1:
            continue
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (numpy_helper.to_array(inits[i]).astype(np.float64) for i in bn.input[1:5])
        scale = gamma / np.sqrt(var + eps)
        w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        wname = conv.input[1]
        inits[wname].CopyFrom(numpy_helper.from_array(
            (w * scale.reshape(-1, 1, 1, 1)).astype(np.float32), wname))
        if len(conv.input) > 2:
            bias = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
            bname = conv.input[2]
        else:
            bias = np.zeros_like(scale)
            bname = wname.rsplit(".", 1)[0] + ".bias"
            conv.input.append(bname)
            t = g.initializer.add()
            inits[bname] = t
        inits[bname].CopyFrom(numpy_helper.from_array(((bias - mean) * scale + beta).astype(np.float32), bname))
        rename[bn.output[0]] = conv.output[0]
        drop_nodes.add(bn.name)
        drop_inits.update(bn.input[1:5])
    keep = [n for n in g.node if n.name not in drop_nodes]
    for n in keep:
        for i, name in enumerate(n.input):
            if name in rename:
                n.input[i] = rename[name]
    for o in g.output:
        if o.name in rename:
            raise ValueError("BN output is a graph output; not folded")
    del g.node[:]
    g.node.extend(keep)
    kept_inits = [t for t in g.initializer if t.name not in drop_inits]
    del g.initializer[:]
    g.initializer.extend(kept_inits)
    del g.value_info[:]
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)


# ---------------------------------------------------------------------------------------
# (a) ResNet-style CNN
# ---------------------------------------------------------------------------------------


def build_resnet(opset: int, rng: np.random.Generator) -> onnx.ModelProto:
    b = Builder(rng, opset)
    x = "input"
    with b.scope("conv1"):
        h = b.conv(x, "conv1", 3, 16, 3, s=1, bias=False)
    with b.scope("bn1"):
        h = b.bn(h, "bn1", 16)
    with b.scope("relu"):
        h = b.op("Relu", [h])
    with b.scope("maxpool"):
        h = b.op("MaxPool", [h], ceil_mode=0, kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2])

    def block(h: str, layer: str, cin: int, cout: int, stride: int) -> str:
        p = f"{layer}.0"
        with b.scope(layer, p):
            with b.scope("conv1"):
                y = b.conv(h, f"{p}.conv1", cin, cout, 3, s=stride, bias=False)
            with b.scope("bn1"):
                y = b.bn(y, f"{p}.bn1", cout)
            with b.scope("relu"):
                y = b.op("Relu", [y])
            with b.scope("conv2"):
                y = b.conv(y, f"{p}.conv2", cout, cout, 3, bias=False)
            with b.scope("bn2"):
                y = b.bn(y, f"{p}.bn2", cout)
            sc = h
            if stride != 1 or cin != cout:
                with b.scope("downsample", "downsample.0"):
                    sc = b.conv(h, f"{p}.downsample.0", cin, cout, 1, s=stride, p=0, bias=False)
                with b.scope("downsample", "downsample.1"):
                    sc = b.bn(sc, f"{p}.downsample.1", cout)
            y = b.op("Add", [y, sc])
            with b.scope("relu_1"):
                return b.op("Relu", [y])

    h = block(h, "layer1", 16, 16, 1)
    h = block(h, "layer2", 16, 32, 2)
    h = block(h, "layer3", 32, 64, 2)
    with b.scope("avgpool"):
        h = b.op("GlobalAveragePool", [h])
    h = b.op("Flatten", [h], axis=1)
    with b.scope("fc"):
        out = b.gemm(h, "fc", 64, 10)
    b.nodes[-1].output[0] = "output"
    model = finish(b, "resnet",
                   [vinfo("input", F32, ["batch_size", 3, 64, 64])],
                   [vinfo("output", F32, ["batch_size", 10])],
                   "ResNet-style CNN, BN unfused (torch.onnx.export, training=PRESERVE-like)")
    del out
    feeds = build_inputs_for(model, "resnet", batch=4, seed=123)
    calibrate_bn(model, feeds, rng)
    return model


# ---------------------------------------------------------------------------------------
# (b) MobileNetV2/V3-style CNN
# ---------------------------------------------------------------------------------------


def build_mobilenet(opset: int, rng: np.random.Generator) -> onnx.ModelProto:
    b = Builder(rng, opset)

    def hardswish(x: str) -> str:
        if opset >= 14:
            return b.op("HardSwish", [x])
        hs = b.op("HardSigmoid", [x], alpha=1.0 / 6, beta=0.5)
        return b.op("Mul", [x, hs])

    def relu6(x: str) -> str:
        return b.op("Clip", [x, b.const(np.array(0.0, np.float32)), b.const(np.array(6.0, np.float32))])

    def conv_bn_act(x, prefix, cin, cout, k, s=1, groups=1, act=None):
        with b.scope(prefix.replace(".", "/")):
            with b.scope("0"):
                y = b.conv(x, f"{prefix}.0", cin, cout, k, s=s, groups=groups, bias=False)
            with b.scope("1"):
                y = b.bn(y, f"{prefix}.1", cout)
            if act is not None:
                with b.scope("2"):
                    y = act(y)
        return y

    def se(x, prefix, c, cr, gate):
        with b.scope(prefix.replace(".", "/")):
            s = b.op("ReduceMean", [x], axes=[2, 3], keepdims=1)
            with b.scope("fc1"):
                s = b.conv(s, f"{prefix}.fc1", c, cr, 1, p=0)
            with b.scope("relu"):
                s = b.op("Relu", [s])
            with b.scope("fc2"):
                s = b.conv(s, f"{prefix}.fc2", cr, c, 1, p=0, gain=1.0)
            with b.scope("scale_activation"):
                s = b.op("Sigmoid", [s]) if gate == "sigmoid" else b.op("HardSigmoid", [s], alpha=1.0 / 6, beta=0.5)
            return b.op("Mul", [s, x])

    x = "input"
    h = conv_bn_act(x, "features.0", 3, 16, 3, s=2, act=hardswish)                    # 32x32
    # V2 inverted residual with relu6, stride 1 -> residual Add
    y = conv_bn_act(h, "features.1.conv.0", 16, 48, 1, act=relu6)
    y = conv_bn_act(y, "features.1.conv.1", 48, 48, 3, groups=48, act=relu6)
    y = conv_bn_act(y, "features.1.conv.2", 48, 16, 1)
    with b.scope("features", "features.1"):
        h = b.op("Add", [h, y])
    # V2 block with stride 2 (no residual)
    y = conv_bn_act(h, "features.2.conv.0", 16, 64, 1, act=relu6)                     # 16x16
    y = conv_bn_act(y, "features.2.conv.1", 64, 64, 3, s=2, groups=64, act=relu6)
    h = conv_bn_act(y, "features.2.conv.2", 64, 24, 1)
    # V3 block: expand + hardswish, depthwise 5x5, SE (Sigmoid gate), project, residual
    y = conv_bn_act(h, "features.3.block.0", 24, 72, 1, act=hardswish)
    y = conv_bn_act(y, "features.3.block.1", 72, 72, 5, groups=72, act=hardswish)
    y = se(y, "features.3.block.2", 72, 24, "sigmoid")
    y = conv_bn_act(y, "features.3.block.3", 72, 24, 1)
    with b.scope("features", "features.3"):
        h = b.op("Add", [h, y])
    # V3 block with stride 2 and HardSigmoid-gated SE
    y = conv_bn_act(h, "features.4.block.0", 24, 96, 1, act=hardswish)               # 8x8
    y = conv_bn_act(y, "features.4.block.1", 96, 96, 5, s=2, groups=96, act=hardswish)
    y = se(y, "features.4.block.2", 96, 24, "hardsigmoid")
    h = conv_bn_act(y, "features.4.block.3", 96, 40, 1)
    h = conv_bn_act(h, "features.5", 40, 128, 1, act=hardswish)
    with b.scope("avgpool"):
        h = b.op("GlobalAveragePool", [h])
    h = b.op("Flatten", [h], axis=1)
    with b.scope("classifier", "classifier.0"):
        h = b.gemm(h, "classifier.0", 128, 64)
    with b.scope("classifier", "classifier.1"):
        h = hardswish(h)
    with b.scope("classifier", "classifier.3"):
        b.gemm(h, "classifier.3", 64, 10)
    b.nodes[-1].output[0] = "output"
    model = finish(b, "mobilenet",
                   [vinfo("input", F32, ["batch_size", 3, 64, 64])],
                   [vinfo("output", F32, ["batch_size", 10])],
                   "MobileNetV2/V3-style CNN, BN folded into Conv")
    feeds = build_inputs_for(model, "mobilenet", batch=4, seed=123)
    calibrate_bn(model, feeds, rng)
    return fold_bn(model)


# ---------------------------------------------------------------------------------------
# (c) BERT-style encoder
# ---------------------------------------------------------------------------------------

BERT = dict(vocab=1000, hidden=64, heads=4, inter=128, layers=2, max_pos=64, types=2)


def build_bert(opset: int, rng: np.random.Generator) -> onnx.ModelProto:
    b = Builder(rng, opset)
    H, NH, D = BERT["hidden"], BERT["heads"], BERT["hidden"] // BERT["heads"]

    def layer_norm(x: str, prefix: str) -> str:
        gamma = np.ones(H, np.float32) + rng.normal(0, 0.05, H).astype(np.float32)
        gamma[[7, 41]] = [4.0, -3.0]  # outlier channels, as in trained BERTs
        g = b.init(f"{prefix}.weight", gamma)
        beta = b.normal(f"{prefix}.bias", (H,), 0.05)
        if opset >= 17:
            return b.op("LayerNormalization", [x, g, beta], axis=-1, epsilon=1e-12)
        mean = b.op("ReduceMean", [x], axes=[-1], keepdims=1)
        d = b.op("Sub", [x, mean])
        var = b.op("ReduceMean", [b.op("Pow", [d, b.const(np.array(2.0, np.float32))])], axes=[-1], keepdims=1)
        std = b.op("Sqrt", [b.op("Add", [var, b.const(np.array(1e-12, np.float32))])])
        y = b.op("Div", [d, std])
        y = b.op("Mul", [y, g])
        return b.op("Add", [y, beta])

    ids, mask, tts = "input_ids", "attention_mask", "token_type_ids"
    with b.scope("embeddings"):
        seq = b.dim(ids, 1)
        batch = b.dim(ids, 0)
        # position_ids = torch.arange(seq).unsqueeze(0).expand(batch, seq)
        pos = b.op("Range", [b.const(np.array(0, np.int64)), seq, b.const(np.array(1, np.int64))])
        pos = b.unsqueeze(pos, [0])
        target = b.op("Concat", [b.unsqueeze(batch, [0]), b.unsqueeze(seq, [0])], axis=0)
        # the exporter's expand(-1-aware) shape pattern
        ones = b.op("ConstantOfShape", [b.i64(2)], value=numpy_helper.from_array(np.array([1], np.int64)))
        neg = b.op("Mul", [ones, b.const(np.array(-1, np.int64))])
        eq = b.op("Equal", [target, neg])
        shp = b.op("Where", [eq, ones, target])
        pos = b.op("Expand", [pos, shp])
        with b.scope("word_embeddings"):
            we = b.op("Gather", [b.normal("embeddings.word_embeddings.weight",
                                          (BERT["vocab"], H), 0.05), ids])
        with b.scope("token_type_embeddings"):
            te = b.op("Gather", [b.normal("embeddings.token_type_embeddings.weight",
                                          (BERT["types"], H), 0.05), tts])
        e = b.op("Add", [we, te])
        with b.scope("position_embeddings"):
            pe = b.op("Gather", [b.normal("embeddings.position_embeddings.weight",
                                          (BERT["max_pos"], H), 0.05), pos])
        e = b.op("Add", [e, pe])
        with b.scope("LayerNorm"):
            h = layer_norm(e, "embeddings.LayerNorm")

    # extended attention mask: (1 - mask[:, None, None, :]) * min
    m = b.unsqueeze(b.unsqueeze(mask, [1]), [2])
    m = b.op("Cast", [m], to=F32)
    inv = b.op("Sub", [b.const(np.array(1.0, np.float32)), m])
    if opset >= 17:  # newer transformers: inverted.masked_fill(inverted.bool(), finfo.min)
        cond = b.op("Cast", [inv], to=TensorProto.BOOL)
        ext = b.op("Where", [cond, b.const(np.array(np.finfo(np.float32).min, np.float32)), inv])
    else:
        ext = b.op("Mul", [inv, b.const(np.array(-10000.0, np.float32))])

    def heads(x: str, perm) -> str:
        shape = b.op("Concat", [b.unsqueeze(b.dim(x, 0), [0]), b.unsqueeze(b.dim(x, 1), [0]),
                                b.i64(NH), b.i64(D)], axis=0)
        x = b.op("Reshape", [x, shape])
        return b.op("Transpose", [x], perm=perm)

    for li in range(BERT["layers"]):
        p = f"encoder.layer.{li}"
        with b.scope("encoder", f"layer.{li}", "attention", "self"):
            with b.scope("query"):
                q = b.linear(h, f"{p}.attention.self.query", H, H, std=0.5 / math.sqrt(H))
            with b.scope("key"):
                k = b.linear(h, f"{p}.attention.self.key", H, H, std=0.5 / math.sqrt(H))
            with b.scope("value"):
                v = b.linear(h, f"{p}.attention.self.value", H, H)
            q = heads(q, [0, 2, 1, 3])
            k = heads(k, [0, 2, 3, 1])
            v = heads(v, [0, 2, 1, 3])
            s = b.op("MatMul", [q, k])
            s = b.op("Div", [s, b.const(np.array(math.sqrt(D), np.float32))])
            s = b.op("Add", [s, ext])
            pr = b.op("Softmax", [s], axis=-1)
            c = b.op("MatMul", [pr, v])
            c = b.op("Transpose", [c], perm=[0, 2, 1, 3])
            shape = b.op("Concat", [b.unsqueeze(b.dim(c, 0), [0]), b.unsqueeze(b.dim(c, 1), [0]), b.i64(H)], axis=0)
            c = b.op("Reshape", [c, shape])
        with b.scope("encoder", f"layer.{li}", "attention", "output"):
            with b.scope("dense"):
                o = b.linear(c, f"{p}.attention.output.dense", H, H)
            o = b.op("Add", [o, h])
            with b.scope("LayerNorm"):
                h = layer_norm(o, f"{p}.attention.output.LayerNorm")
        with b.scope("encoder", f"layer.{li}", "intermediate"):
            with b.scope("dense"):
                f = b.linear(h, f"{p}.intermediate.dense", H, BERT["inter"])
            with b.scope("intermediate_act_fn"):  # GELU: x * 0.5 * (1 + erf(x / sqrt(2)))
                t = b.op("Div", [f, b.const(np.array(1.4142135381698608, np.float32))])
                t = b.op("Erf", [t])
                t = b.op("Add", [t, b.const(np.array(1.0, np.float32))])
                t = b.op("Mul", [f, t])
                f = b.op("Mul", [t, b.const(np.array(0.5, np.float32))])
        with b.scope("encoder", f"layer.{li}", "output"):
            with b.scope("dense"):
                o = b.linear(f, f"{p}.output.dense", BERT["inter"], H)
            o = b.op("Add", [o, h])
            with b.scope("LayerNorm"):
                h = layer_norm(o, f"{p}.output.LayerNorm")
    b.nodes[-1].output[0] = "last_hidden_state"  # the final LayerNorm's output
    with b.scope("pooler"):
        first = b.op("Gather", ["last_hidden_state", b.const(np.array(0, np.int64))], axis=1)
        with b.scope("dense"):
            pooled = b.gemm(first, "pooler.dense", H, H)
        with b.scope("activation"):
            b.op("Tanh", [pooled])
    b.nodes[-1].output[0] = "pooler_output"
    dims = ["batch_size", "sequence_length"]
    return finish(b, "bert",
                  [vinfo(ids, I64, dims), vinfo(mask, I64, dims), vinfo(tts, I64, dims)],
                  [vinfo("last_hidden_state", F32, dims + [H]), vinfo("pooler_output", F32, ["batch_size", H])],
                  "2-layer BERT-style encoder as transformers + torch.onnx.export produce it")


# ---------------------------------------------------------------------------------------
# (d) LSTM / GRU
# ---------------------------------------------------------------------------------------

RNN = dict(feat=16, hidden=32, classes=5)


def build_rnn(kind: str, opset: int, rng: np.random.Generator) -> onnx.ModelProto:
    b = Builder(rng, opset)
    F, Hd = RNN["feat"], RNN["hidden"]
    gates = 4 if kind == "LSTM" else 3
    k = 1.0 / math.sqrt(Hd)

    def rnn(x: str, prefix: str, fin: int, dirs: int, init_states: bool) -> str:
        W = b.uniform(f"onnx::{kind}_{prefix}_W", (dirs, gates * Hd, fin), -k, k)
        R = b.uniform(f"onnx::{kind}_{prefix}_R", (dirs, gates * Hd, Hd), -k, k)
        B = b.uniform(f"onnx::{kind}_{prefix}_B", (dirs, 2 * gates * Hd), -k, k)
        ins = [x, W, R, B]
        attrs = dict(direction="bidirectional" if dirs == 2 else "forward", hidden_size=Hd)
        if kind == "GRU":
            attrs["linear_before_reset"] = 1
        if init_states:
            # torch: h0 = zeros(num_layers*dirs, batch, hidden) from the dynamic batch size
            shape = b.op("Concat", [b.i64(dirs), b.unsqueeze(b.dim(x, 1), [0]), b.i64(Hd)], axis=0)
            h0 = b.op("ConstantOfShape", [shape], value=numpy_helper.from_array(np.zeros(1, np.float32)))
            ins += ["", h0]
            if kind == "LSTM":
                ins.append(h0)
        n_out = 3 if kind == "LSTM" else 2
        outs = b.op(kind, ins, n_out=n_out, **attrs)
        return outs[0]  # Y: [seq, dirs, batch, hidden]

    x = "input"
    with b.scope(kind.lower()):
        t = b.op("Transpose", [x], perm=[1, 0, 2])                       # [seq, batch, F]
        y = rnn(t, "l0", F, 2, init_states=(kind == "LSTM"))
        y = b.op("Transpose", [y], perm=[0, 2, 1, 3])                    # [seq, batch, 2, H]
        y = b.op("Reshape", [y, b.i64(0, 0, -1)])                        # [seq, batch, 2H]
        y2 = rnn(y, "l1", 2 * Hd, 1, init_states=(kind == "LSTM"))
        y2 = b.squeeze(y2, [1])                                          # [seq, batch, H]
        seq_out = b.op("Transpose", [y2], perm=[1, 0, 2])                # [batch, seq, H]
    b.nodes[-1].output[0] = "sequence_output"
    last = b.op("Gather", ["sequence_output", b.const(np.array(-1, np.int64))], axis=1)
    with b.scope("fc"):
        b.gemm(last, "fc", Hd, RNN["classes"])
    b.nodes[-1].output[0] = "logits"
    del seq_out
    return finish(b, kind.lower(),
                  [vinfo(x, F32, ["batch_size", "sequence_length", F])],
                  [vinfo("sequence_output", F32, ["batch_size", "sequence_length", Hd]),
                   vinfo("logits", F32, ["batch_size", RNN["classes"]])],
                  f"batch-first bidirectional + forward {kind}, sequence_lens omitted")


# ---------------------------------------------------------------------------------------
# (e) If / Loop
# ---------------------------------------------------------------------------------------


def build_control_flow(opset: int, rng: np.random.Generator) -> onnx.ModelProto:
    b = Builder(rng, opset)
    C = 8
    x = "x"
    w_then = b.normal("then.weight", (C, C), 1.0 / math.sqrt(C))
    bias_else = b.normal("else.bias", (C,), 0.5)
    w_loop = b.normal("loop.weight", (C, C), 0.8 / math.sqrt(C))
    bat = ["batch_size", C]

    # If on a data-dependent condition; both branches read outer-scope x and initializers
    s = b.op("ReduceSum", [x], keepdims=0)
    cond = b.op("Greater", [s, b.const(np.array(0.0, np.float32))])
    tb = b.sub()
    with tb.scope("then"):
        t = tb.op("Relu", [tb.op("MatMul", [x, w_then])])
    eb = b.sub()
    with eb.scope("else"):
        e = eb.op("Neg", [eb.op("Sub", [x, bias_else])])
    then_g = helper.make_graph(tb.nodes, "then_branch", [], [vinfo(t, F32, bat)])
    else_g = helper.make_graph(eb.nodes, "else_branch", [], [vinfo(e, F32, bat)])
    y_if = b.op("If", [cond], then_branch=then_g, else_branch=else_g)
    b.nodes[-1].output[0] = "if_out"
    y_if = "if_out"

    # Loop: 4 iterations, carried h, scan output from a nested If
    lb = b.sub()
    it, cin, h_in = "loop_iter", "loop_cond_in", "loop_h_in"
    with lb.scope("loop"):
        a = lb.op("MatMul", [h_in, w_loop])                    # outer initializer
        a = lb.op("Add", [a, x])                               # outer graph input
        f = lb.op("Mul", [lb.op("Cast", [it], to=F32), lb.const(np.array(0.1, np.float32))])
        h_out = lb.op("Tanh", [lb.op("Add", [a, f])])
        parity = lb.op("Equal", [lb.op("Mod", [it, lb.const(np.array(2, np.int64))]),
                                 lb.const(np.array(0, np.int64))])
        nt = lb.sub()
        with nt.scope("even"):  # reads h_out (loop body scope) and if_out (main graph)
            ev = nt.op("Add", [h_out, nt.op("Mul", [y_if, nt.const(np.array(0.5, np.float32))])])
        ne = nt.sub()
        with ne.scope("odd"):
            od = ne.op("Sub", [h_out, ne.const(np.array(0.25, np.float32))])
        scan = lb.op("If", [parity],
                     then_branch=helper.make_graph(nt.nodes, "even_branch", [], [vinfo(ev, F32, bat)]),
                     else_branch=helper.make_graph(ne.nodes, "odd_branch", [], [vinfo(od, F32, bat)]))
        cout = lb.op("Identity", [cin])
    body = helper.make_graph(
        lb.nodes, "loop_body",
        [vinfo(it, I64, []), vinfo(cin, TensorProto.BOOL, []), vinfo(h_in, F32, bat)],
        [vinfo(cout, TensorProto.BOOL, []), vinfo(h_out, F32, bat), vinfo(scan, F32, bat)])
    h_fin, scans = b.op("Loop", [b.const(np.array(4, np.int64)), b.const(np.array(True)), y_if],
                        n_out=2, body=body)
    b.nodes[-1].output[:] = ["loop_h", "loop_scan"]

    # while-style Loop: no trip count; runs while i + 1 < batch_size + 2
    limit = b.op("Add", [b.dim(x, 0), b.const(np.array(2, np.int64))])
    wb = b.sub()
    wit, wcin, acc_in = "while_iter", "while_cond_in", "while_acc_in"
    with wb.scope("while"):
        acc = wb.op("Add", [acc_in, wb.op("ReduceMean", ["loop_h"], keepdims=0)])   # outer value
        nxt = wb.op("Add", [wit, wb.const(np.array(1, np.int64))])
        wcout = wb.op("Less", [nxt, limit])                                          # outer value
    wbody = helper.make_graph(
        wb.nodes, "while_body",
        [vinfo(wit, I64, []), vinfo(wcin, TensorProto.BOOL, []), vinfo(acc_in, F32, [])],
        [vinfo(wcout, TensorProto.BOOL, []), vinfo(acc, F32, [])])
    b.op("Loop", ["", b.const(np.array(True)), b.const(np.array(0.0, np.float32))], body=wbody)
    b.nodes[-1].output[0] = "while_acc"
    return finish(b, "control_flow", [vinfo(x, F32, bat)],
                  [vinfo("if_out", F32, bat), vinfo("loop_h", F32, bat),
                   vinfo("loop_scan", F32, [4, "batch_size", C]), vinfo("while_acc", F32, [])],
                  "If / Loop / nested If with outer-scope references, while-style Loop")


# ---------------------------------------------------------------------------------------
# (f) detector-like model
# ---------------------------------------------------------------------------------------


def build_detector(opset: int, rng: np.random.Generator) -> onnx.ModelProto:
    b = Builder(rng, opset)
    x = "images"

    def cbr(x, name, cin, cout, k=3, s=1):
        with b.scope(name):
            return b.op("Relu", [b.conv(x, name, cin, cout, k, s=s)])

    def resize_nearest(x, scale):
        return b.op("Resize", [x, "", b.const(np.array([1, 1, scale, scale], np.float32))],
                    coordinate_transformation_mode="asymmetric", cubic_coeff_a=-0.75,
                    mode="nearest", nearest_mode="floor")

    def resize_like(x, ref):  # F.interpolate(x, size=ref.shape[-2:], mode="bilinear")
        hw = b.op("Slice", [b.op("Shape", [ref]), b.i64(2), b.i64(4), b.i64(0)])
        nc = b.op("Slice", [b.op("Shape", [x]), b.i64(0), b.i64(2), b.i64(0)])
        sizes = b.op("Concat", [nc, hw], axis=0)
        return b.op("Resize", [x, "", "", sizes], coordinate_transformation_mode="pytorch_half_pixel",
                    cubic_coeff_a=-0.75, mode="linear", nearest_mode="floor")

    c0 = cbr(x, "stem", 3, 16, s=2)            # 32x32
    c1 = cbr(c0, "stage1", 16, 24, s=2)        # 16x16
    c2 = cbr(c1, "stage2", 24, 32, s=2)        # 8x8
    c3 = cbr(c2, "stage3", 32, 48, s=2)        # 4x4
    with b.scope("fpn"):
        with b.scope("lat3"):
            p3 = b.conv(c3, "fpn.lat3", 48, 32, 1, gain=1.0)
        with b.scope("lat2"):
            p2 = b.conv(c2, "fpn.lat2", 32, 32, 1, gain=1.0)
        p2 = b.op("Add", [p2, resize_nearest(p3, 2)])
        with b.scope("lat1"):
            p1 = b.conv(c1, "fpn.lat1", 24, 32, 1, gain=1.0)
        p1 = b.op("Add", [p1, resize_like(p2, p1)])
        fuse = b.op("Concat", [p1, resize_nearest(p2, 2), resize_like(p3, p1)], axis=1)   # 96 @ 16x16
    f = cbr(fuse, "fuse", 96, 32)
    with b.scope("db_head"):
        with b.scope("conv"):
            d = b.op("Relu", [b.conv(f, "db_head.conv", 32, 16, 3)])
        with b.scope("up1"):
            w = b.normal("db_head.up1.weight", (16, 8, 2, 2), math.sqrt(2.0 / 16))
            d = b.op("ConvTranspose", [d, w, b.normal("db_head.up1.bias", (8,), 0.05)],
                     dilations=[1, 1], group=1, kernel_shape=[2, 2], pads=[0, 0, 0, 0], strides=[2, 2])
            d = b.op("Relu", [d])
        with b.scope("up2"):
            w = b.normal("db_head.up2.weight", (8, 1, 4, 4), math.sqrt(1.0 / 32))
            d = b.op("ConvTranspose", [d, w, b.normal("db_head.up2.bias", (1,), 0.05)],
                     dilations=[1, 1], group=1, kernel_shape=[4, 4], pads=[1, 1, 1, 1], strides=[2, 2])
        b.op("Sigmoid", [d])
    b.nodes[-1].output[0] = "prob"
    with b.scope("yolo_head"):
        with b.scope("pred"):
            pr = b.conv(p2, "yolo_head.pred", 32, 8, 1, gain=1.0)      # 4 box + 1 obj + 3 cls @ 8x8
        box, obj, cls = b.op("Split", [pr, b.i64(4, 1, 3)], n_out=3, axis=1)
        xy = b.op("Sigmoid", [b.op("Slice", [box, b.i64(0), b.i64(2), b.i64(1), b.i64(1)])])
        wh = b.op("Exp", [b.op("Slice", [box, b.i64(2), b.i64(INT64_MAX), b.i64(1), b.i64(1)])])
        boxes = b.op("Concat", [xy, wh], axis=1)
        boxes = b.op("Transpose", [boxes], perm=[0, 2, 3, 1])
        b.op("Reshape", [boxes, b.i64(0, -1, 4)])
        b.nodes[-1].output[0] = "boxes"
        sc = b.op("Mul", [b.op("Sigmoid", [obj]), b.op("Sigmoid", [cls])])
        sc = b.op("Transpose", [sc], perm=[0, 2, 3, 1])
        b.op("Reshape", [sc, b.i64(0, -1, 3)])
        b.nodes[-1].output[0] = "scores"
    return finish(b, "detector", [vinfo(x, F32, ["batch_size", 3, 64, 64])],
                  [vinfo("prob", F32, ["batch_size", 1, 64, 64]), vinfo("boxes", F32, ["batch_size", 64, 4]),
                   vinfo("scores", F32, ["batch_size", 64, 3])],
                  "detector-like: FPN with Resize, DB head with ConvTranspose, YOLO head with Split/Slice")


# ---------------------------------------------------------------------------------------
# inputs, driver
# ---------------------------------------------------------------------------------------


def build_inputs_for(model: onnx.ModelProto, family: str, batch: int, seed: int) -> dict[str, np.ndarray]:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"{family}.onnx"
        onnx.save(model, str(p))
        dims = {"bert": ["sequence_length=16"], "lstm": ["sequence_length=12"],
                "gru": ["sequence_length=12"]}.get(family, [])
        feeds = build_inputs(p, seed=seed, batch=batch, dims=dims, preset="generic")
    if family == "bert":  # padded batch: the last sample has 5 padding tokens
        m = feeds["attention_mask"]
        if m.shape[0] > 1:
            m[-1, -5:] = 0
            feeds["input_ids"][-1, -5:] = 0
        tt = feeds["token_type_ids"]
        tt[:, tt.shape[1] // 2:] = 1
        tt[m == 0] = 0
    if family == "control_flow":
        feeds["x"] = feeds["x"] * 0.5 + 0.1
    return feeds


FAMILIES = {
    "resnet": build_resnet,
    "mobilenet": build_mobilenet,
    "bert": build_bert,
    "lstm": lambda o, r: build_rnn("LSTM", o, r),
    "gru": lambda o, r: build_rnn("GRU", o, r),
    "control_flow": build_control_flow,
    "detector": build_detector,
}


def ops_of(graph: onnx.GraphProto, out: set[str]) -> set[str]:
    for n in graph.node:
        out.add(n.op_type)
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                ops_of(a.g, out)
    return out


def describe_vi(vi: onnx.ValueInfoProto) -> dict:
    tt = vi.type.tensor_type
    return {"name": vi.name, "dtype": TensorProto.DataType.Name(tt.elem_type).lower(),
            "shape": [d.dim_value if d.HasField("dim_value") else d.dim_param for d in tt.shape.dim]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="folder for the models (created)")
    ap.add_argument("--batch", type=int, default=2, help="batch size of the test inputs (default 2)")
    ap.add_argument("--only", nargs="*", choices=sorted(FAMILIES), help="build only these families")
    ap.add_argument("--opsets", nargs="*", type=int, default=[13, 17], choices=[13, 17])
    args = ap.parse_args()

    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    index = []
    for fam, build in FAMILIES.items():
        if args.only and fam not in args.only:
            continue
        for opset in args.opsets:
            name = f"{fam}_op{opset}"
            rng = np.random.default_rng(zlib.crc32(fam.encode()))
            model = build(opset, rng)
            onnx.checker.check_model(model, full_check=True)
            path = out / f"{name}.onnx"
            data = model.SerializeToString()
            path.write_bytes(data)
            feeds = build_inputs_for(model, fam, args.batch, seed=zlib.crc32(fam.encode()) + 1)
            expected = run_model(path, feeds, threads=1, warn=lambda m: print(m, file=sys.stderr))
            for k, v in expected.items():
                if not np.all(np.isfinite(v)):
                    raise SystemExit(f"{name}: output {k} has non-finite values")
            save_npz(out / f"{name}.input.npz", feeds)
            save_npz(out / f"{name}.expected.npz", expected)
            index.append({
                "name": name, "family": fam, "file": path.name, "opset": opset,
                "ir_version": model.ir_version, "bytes": len(data),
                "inputs": [describe_vi(v) for v in model.graph.input],
                "outputs": [describe_vi(v) for v in model.graph.output],
                "ops": sorted(ops_of(model.graph, set())),
                "input_npz": f"{name}.input.npz", "expected_npz": f"{name}.expected.npz",
            })
            outs = ", ".join(f"{k}{list(v.shape)}" for k, v in expected.items())
            print(f"{name:<20} {len(data) / 1024:7.1f} KiB  {len(model.graph.node):4d} nodes  -> {outs}")
    (out / "models.json").write_text(json.dumps(index, indent=1) + "\n")
    print(f"wrote {len(index)} models to {out} (index: models.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
