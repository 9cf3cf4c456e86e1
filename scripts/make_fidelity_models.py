#!/usr/bin/env python3
"""Build ONNX models that exercise every field of the ONNX schema, for round-trip tests.

kvant's loader/saver (crates/kvant-graph) must reproduce every field of a model it loads.
This script writes small models to OUT_DIR, each aimed at one part of the schema:

  kitchen_sink.onnx     metadata_props and doc strings at model / graph / node / tensor /
                        value_info level, value_info of every type kind (tensor with symbolic,
                        fixed and unknown dims and denotations, sequence, optional, map,
                        sparse tensor, opaque), attributes of every type (float, int, string,
                        tensor, graph, sparse tensor, type proto and all their list forms,
                        empty lists), sparse initializers, quantization_annotation,
                        training_info, a model-local function with attribute defaults and
                        ref_attr_name references, node overload / device_configurations, model
                        device configurations, several opset imports (one with its domain
                        absent), nodes with an explicit empty name / absent domain, tensors
                        with an absent name, complex initializers. Not runnable.
  function.onnx         a model-local function (with an attribute default, a ref_attr_name
                        reference and a Constant in its body) called twice. Runnable.
  control_flow.onnx     If with initializers in its branches, a Loop with a nested If that
                        reads outer-scope values. Runnable.
  external_data.onnx    initializers, a Constant, an If branch constant and a function body
                        constant, all stored in one external file (external_data.onnx.data)
                        by onnx.save_model(save_as_external_data=True, size_threshold=0,
                        convert_attribute=True).
                        Runnable.
  typed_fields.onnx     initializers stored in the typed fields (float_data, int32_data for
                        int8 / uint8 / int16 / uint16 / float16 / bfloat16 / bool,
                        int64_data, double_data, uint64_data for uint32 / uint64,
                        string_data) instead of raw_data, returned through Identity. Runnable.
  low_precision.onnx    int4 / uint4 (odd element counts) and float8 (all four kinds)
                        initializers, both in raw_data and in int32_data, returned through
                        Identity. Runnable.
  low_precision_exotic.onnx
                        the same for float8e8m0, float4e2m1, int2 / uint2 (opset 25).

Usage: make_fidelity_models.py OUT_DIR
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import onnx
from onnx import (
    AttributeProto,
    TensorProto,
    helper,
    numpy_helper,
)

OPSET = 21


def meta(**kv: str) -> list[onnx.StringStringEntryProto]:
    """StringStringEntryProto list from keyword arguments."""
    return [onnx.StringStringEntryProto(key=k, value=v) for k, v in kv.items()]


def tensor_vi(name: str, elem: int, shape, doc: str = "") -> onnx.ValueInfoProto:
    """A tensor ValueInfoProto."""
    return helper.make_tensor_value_info(name, elem, shape, doc_string=doc)


def identity_model(
    name: str, tensors: list[TensorProto], opset: int = OPSET
) -> onnx.ModelProto:
    """A graph that returns each initializer through an Identity node."""
    nodes, outputs = [], []
    for t in tensors:
        out = f"{t.name}_out"
        nodes.append(helper.make_node("Identity", [t.name], [out], name=f"id_{t.name}"))
        outputs.append(tensor_vi(out, t.data_type, list(t.dims)))
    graph = helper.make_graph(nodes, name, [], outputs, initializer=tensors)
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10
    )


def small_graph(name: str, scale: float) -> onnx.GraphProto:
    """A one-input graph y = x * scale with an initializer (used as attribute value)."""
    s = numpy_helper.from_array(np.array([scale], dtype=np.float32), f"{name}_scale")
    return helper.make_graph(
        [helper.make_node("Mul", ["x", s.name], ["y"], name=f"{name}_mul")],
        name,
        [tensor_vi("x", TensorProto.FLOAT, [1])],
        [tensor_vi("y", TensorProto.FLOAT, [1])],
        initializer=[s],
        doc_string=f"{name} doc",
    )


def sparse(name: str) -> onnx.SparseTensorProto:
    """A 3x4 sparse float tensor with 3 values (linearized indices)."""
    values = numpy_helper.from_array(np.array([1.5, -2.0, 3.25], dtype=np.float32), name)
    indices = numpy_helper.from_array(np.array([0, 5, 11], dtype=np.int64), f"{name}_idx")
    return helper.make_sparse_tensor(values, indices, [3, 4])


def kitchen_sink() -> onnx.ModelProto:
    """Every schema field at least once."""
    f32 = TensorProto.FLOAT
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4), "w")
    w.doc_string = "weight doc"
    w.metadata_props.extend(meta(origin="arange", quant="none"))
    c64 = helper.make_tensor("c64", TensorProto.COMPLEX64, [2], [1 + 2j, 3 - 4j])
    c128 = helper.make_tensor("c128", TensorProto.COMPLEX128, [1], [5 + 6j])
    empty = numpy_helper.from_array(np.zeros((0, 3), dtype=np.float32), "empty")
    scalar = numpy_helper.from_array(np.array(7, dtype=np.int64), "scalar")

    # A tensor attribute whose name field is absent (numpy_helper without a name).
    unnamed = numpy_helper.from_array(np.array([1.0, 2.0], dtype=np.float32))
    named_empty = numpy_helper.from_array(np.array([3], dtype=np.int32), "")

    seq_t = helper.make_sequence_type_proto(helper.make_tensor_type_proto(f32, [None, 2]))
    opt_t = helper.make_optional_type_proto(helper.make_tensor_type_proto(TensorProto.INT64, []))
    map_t = helper.make_map_type_proto(
        TensorProto.STRING, helper.make_tensor_type_proto(f32, ["n"])
    )
    sparse_t = helper.make_sparse_tensor_type_proto(f32, [3, 4])
    opaque_t = onnx.TypeProto()
    opaque_t.opaque_type.domain = "kvant.test"
    opaque_t.opaque_type.name = "Blob"
    opaque_t.denotation = "OPAQUE"

    attrs = [
        helper.make_attribute("f", 0.5, doc_string="a float"),
        helper.make_attribute("i", -3),
        helper.make_attribute("s", b"bytes\x00\xff"),
        helper.make_attribute("t", unnamed),
        helper.make_attribute("t_empty_name", named_empty),
        helper.make_attribute("g", small_graph("attr_graph", 2.0)),
        helper.make_attribute("sp", sparse("sp_values")),
        helper.make_attribute("tp", seq_t),
        helper.make_attribute("floats", [1.0, -0.0, float("inf")]),
        helper.make_attribute("ints", [1, -2, 1 << 40]),
        helper.make_attribute("strings", [b"a", b"", "ü".encode()]),
        helper.make_attribute("tensors", [scalar, empty]),
        helper.make_attribute(
            "graphs", [small_graph("g1", 1.0), small_graph("g2", 3.0)]
        ),
        helper.make_attribute("sparses", [sparse("s1"), sparse("s2")]),
        helper.make_attribute("tps", [opt_t, map_t, sparse_t, opaque_t]),
        helper.make_attribute("no_floats", [], attr_type=AttributeProto.FLOATS),
        helper.make_attribute("no_ints", [], attr_type=AttributeProto.INTS),
        helper.make_attribute("no_strings", [], attr_type=AttributeProto.STRINGS),
        helper.make_attribute("no_tensors", [], attr_type=AttributeProto.TENSORS),
        helper.make_attribute("no_graphs", [], attr_type=AttributeProto.GRAPHS),
    ]
    everything = helper.make_node(
        "Everything",
        ["x", "w"],
        ["y", ""],
        name="everything",
        domain="kvant.test",
        doc_string="node doc",
    )
    everything.attribute.extend(attrs)
    everything.metadata_props.extend(meta(source="kitchen_sink.py", line="1"))
    everything.overload = "v2"
    everything.device_configurations.append(
        onnx.NodeDeviceConfigurationProto(
            configuration_id="two_cpus",
            pipeline_stage=1,
            sharding_spec=[
                onnx.ShardingSpecProto(
                    tensor_name="x",
                    device=[0, 1],
                    index_to_device_group_map=[onnx.IntIntListEntryProto(key=0, value=[0, 1])],
                    sharded_dim=[
                        onnx.ShardedDimProto(
                            axis=0,
                            simple_sharding=[
                                onnx.SimpleShardedDimProto(dim_value=4, num_shards=2),
                                onnx.SimpleShardedDimProto(dim_param="n", num_shards=2),
                            ],
                        )
                    ],
                )
            ],
        )
    )

    # Explicit empty name, domain absent (make_node sets domain only when given).
    plain = onnx.NodeProto(op_type="Relu", input=["y"], output=["z"], name="")
    # Calls the model-local function with an overload.
    call = helper.make_node("Scale", ["z"], ["out"], name="call", domain="kvant.fn", alpha=4.0)
    call.overload = "fast"

    x_vi = tensor_vi("x", f32, ["batch", 4], doc="input doc")
    x_vi.type.tensor_type.shape.dim[0].denotation = "DATA_BATCH"
    x_vi.type.denotation = "TENSOR"
    x_vi.metadata_props.extend(meta(role="input"))
    unknown_dim = tensor_vi("z", f32, [None, 4])
    unknown_dim.metadata_props.extend(meta(role="intermediate"))
    value_info = [
        unknown_dim,
        helper.make_value_info("seq", seq_t, doc_string="a sequence"),
        helper.make_value_info("opt", opt_t),
        helper.make_value_info("map", map_t),
        helper.make_value_info("sparse_v", sparse_t),
        helper.make_value_info("opaque", opaque_t),
        tensor_vi("no_shape", f32, None),
    ]
    graph = helper.make_graph(
        [everything, plain, call],
        "kitchen_sink",
        [x_vi, tensor_vi("w", f32, [3, 4])],
        [tensor_vi("out", f32, ["batch", 4], doc="output doc")],
        initializer=[w, c64, c128, empty, scalar],
        doc_string="graph doc",
        value_info=value_info,
        sparse_initializer=[sparse("sparse_init")],
    )
    graph.metadata_props.extend(meta(graph_key="graph_value"))
    graph.quantization_annotation.append(
        onnx.TensorAnnotation(
            tensor_name="w",
            quant_parameter_tensor_names=meta(SCALE_TENSOR="w_scale", ZERO_POINT_TENSOR="w_zp"),
        )
    )

    fn_body = [
        helper.make_node("Constant", [], ["c"], value_float=1.0, name="fn_const"),
        helper.make_node("Mul", ["a", "c"], ["t"]),
        helper.make_node("Constant", [], ["k"], name="fn_ref"),
        helper.make_node("Mul", ["t", "k"], ["b"], doc_string="body doc"),
    ]
    fn_body[2].attribute.append(
        helper.make_attribute_ref("value_float", AttributeProto.FLOAT, doc_string="ref doc")
    )
    fn_body[2].attribute[0].ref_attr_name = "alpha"
    func = helper.make_function(
        "kvant.fn",
        "Scale",
        ["a"],
        ["b"],
        fn_body,
        [helper.make_opsetid("", OPSET)],
        attributes=["beta"],
        attribute_protos=[helper.make_attribute("alpha", 2.0, doc_string="default")],
        doc_string="function doc",
        value_info=[tensor_vi("t", f32, [None, 4])],
    )
    func.overload = "fast"
    func.metadata_props.extend(meta(fn_key="fn_value"))

    training = onnx.TrainingInfoProto(
        initialization=small_graph("init_graph", 0.0),
        algorithm=small_graph("algo_graph", 0.1),
        initialization_binding=meta(w="init_graph_scale"),
        update_binding=meta(w="algo_graph_scale"),
    )

    default_opset = onnx.OperatorSetIdProto(version=OPSET)  # domain absent
    model = helper.make_model(
        graph,
        opset_imports=[
            default_opset,
            helper.make_opsetid("kvant.test", 1),
            helper.make_opsetid("kvant.fn", 1),
            helper.make_opsetid("ai.onnx.ml", 4),
        ],
        producer_name="kvant-fidelity",
        producer_version="1.0",
        domain="dev.kvant",
        model_version=42,
        doc_string="model doc",
        functions=[func],
        ir_version=11,
    )
    model.training_info.append(training)
    model.metadata_props.extend(meta(author="kvant", license="Apache-2.0"))
    model.configuration.append(
        onnx.DeviceConfigurationProto(name="two_cpus", num_devices=2, device=["cpu:0", "cpu:1"])
    )
    return model


def scale_function() -> onnx.FunctionProto:
    """kvant.fn.Scale(a; alpha=2.0) = a * alpha + 1, with a Constant in the body."""
    const_alpha = helper.make_node("Constant", [], ["k"], name="alpha_const")
    const_alpha.attribute.append(helper.make_attribute_ref("value_float", AttributeProto.FLOAT))
    const_alpha.attribute[0].ref_attr_name = "alpha"
    body = [
        const_alpha,
        helper.make_node(
            "Constant",
            [],
            ["one"],
            value=numpy_helper.from_array(np.ones(4, dtype=np.float32), "one_t"),
        ),
        helper.make_node("Mul", ["a", "k"], ["t"]),
        helper.make_node("Add", ["t", "one"], ["b"]),
    ]
    return helper.make_function(
        "kvant.fn",
        "Scale",
        ["a"],
        ["b"],
        body,
        [helper.make_opsetid("", OPSET)],
        attribute_protos=[helper.make_attribute("alpha", 2.0)],
        doc_string="a * alpha + 1",
    )


def function_model() -> onnx.ModelProto:
    """Two calls of a model-local function, one with the default attribute."""
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        [
            helper.make_node("Scale", ["x"], ["y"], domain="kvant.fn", name="default_alpha"),
            helper.make_node("Scale", ["y"], ["z"], domain="kvant.fn", name="alpha3", alpha=3.0),
        ],
        "function",
        [tensor_vi("x", f32, [2, 4])],
        [tensor_vi("z", f32, [2, 4])],
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("kvant.fn", 1)],
        functions=[scale_function()],
        ir_version=10,
    )


def control_flow_model() -> onnx.ModelProto:
    """If with branch initializers; Loop carrying state with a nested If."""
    f32, i64, b = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
    then_g = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["then_out"])],
        "then",
        [],
        [tensor_vi("then_out", f32, [2, 3])],
        initializer=[numpy_helper.from_array(np.ones((2, 3), np.float32), "one")],
    )
    else_g = helper.make_graph(
        [
            helper.make_node("Constant", [], ["two"], value_float=2.0),
            helper.make_node("Mul", ["x", "two"], ["else_out"]),
        ],
        "else",
        [],
        [tensor_vi("else_out", f32, [2, 3])],
    )
    inner_then = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "x"], ["inner_out"])],
        "inner_then",
        [],
        [tensor_vi("inner_out", f32, [2, 3])],
    )
    inner_else = helper.make_graph(
        [helper.make_node("Sub", ["acc_in", "x"], ["inner_out2"])],
        "inner_else",
        [],
        [tensor_vi("inner_out2", f32, [2, 3])],
    )
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node(
                "If", ["flag"], ["acc_out"], then_branch=inner_then, else_branch=inner_else
            ),
            helper.make_node("ReduceSum", ["acc_out"], ["scan_out"], keepdims=0),
        ],
        "body",
        [
            tensor_vi("iter", i64, []),
            tensor_vi("cond_in", b, []),
            tensor_vi("acc_in", f32, [2, 3]),
        ],
        [
            tensor_vi("cond_out", b, []),
            tensor_vi("acc_out", f32, [2, 3]),
            tensor_vi("scan_out", f32, []),
        ],
    )
    trip = numpy_helper.from_array(np.array(3, dtype=np.int64), "trip")
    true = numpy_helper.from_array(np.array(True), "true")
    graph = helper.make_graph(
        [
            helper.make_node("If", ["flag"], ["branch"], then_branch=then_g, else_branch=else_g),
            helper.make_node("Loop", ["trip", "true", "branch"], ["final", "sums"], body=body),
        ],
        "control_flow",
        [tensor_vi("x", f32, [2, 3]), tensor_vi("flag", b, [])],
        [tensor_vi("final", f32, [2, 3]), tensor_vi("sums", f32, [3])],
        initializer=[trip, true],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def external_data_model() -> onnx.ModelProto:
    """Tensors in the graph, an If branch and a function body (all made external on save)."""
    f32 = TensorProto.FLOAT
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "bias")
    ids = numpy_helper.from_array(np.array([2, 0, 1], dtype=np.int64), "ids")
    half = numpy_helper.from_array(rng.standard_normal(3).astype(np.float16), "half")
    branch = helper.make_graph(
        [
            helper.make_node(
                "Constant",
                [],
                ["bc"],
                value=numpy_helper.from_array(np.full(3, 0.25, np.float32), "bc_t"),
            ),
            helper.make_node("Add", ["h", "bc"], ["then_out"]),
        ],
        "then",
        [],
        [tensor_vi("then_out", f32, [2, 3])],
    )
    other = helper.make_graph(
        [helper.make_node("Identity", ["h"], ["else_out"])],
        "else",
        [],
        [tensor_vi("else_out", f32, [2, 3])],
    )
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["mm"]),
            helper.make_node("Add", ["mm", "bias"], ["a"]),
            helper.make_node("Gather", ["a", "ids"], ["g"], axis=1),
            helper.make_node("Cast", ["half"], ["half32"], to=f32),
            helper.make_node("Add", ["g", "half32"], ["h0"]),
            helper.make_node(
                "Constant",
                [],
                ["c"],
                value=numpy_helper.from_array(np.full((2, 3), 0.5, np.float32), "c_t"),
            ),
            helper.make_node("Mul", ["h0", "c"], ["h"]),
            helper.make_node("If", ["flag"], ["b"], then_branch=branch, else_branch=other),
            helper.make_node("Scale", ["b"], ["y"], domain="kvant.fn"),
        ],
        "external_data",
        [tensor_vi("x", f32, [2, 4]), tensor_vi("flag", TensorProto.BOOL, [])],
        [tensor_vi("y", f32, [2, 3])],
        initializer=[w, bias, ids, half],
    )
    fn = scale_function()
    fn.node[1].attribute[0].t.CopyFrom(
        numpy_helper.from_array(np.ones(3, dtype=np.float32), "one_t")
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("kvant.fn", 1)],
        functions=[fn],
        ir_version=10,
    )


def typed_fields_model() -> onnx.ModelProto:
    """Initializers stored in the typed repeated fields rather than raw_data."""
    T = TensorProto
    tensors = [
        helper.make_tensor("f32", T.FLOAT, [2, 2], [1.0, -2.5, float("inf"), 0.0]),
        helper.make_tensor("i32", T.INT32, [3], [1, -2, 2**31 - 1]),
        helper.make_tensor("i8", T.INT8, [3], [-128, 0, 127]),
        helper.make_tensor("u8", T.UINT8, [3], [0, 128, 255]),
        helper.make_tensor("i16", T.INT16, [3], [-32768, 1, 32767]),
        helper.make_tensor("u16", T.UINT16, [2], [0, 65535]),
        helper.make_tensor("f16", T.FLOAT16, [3], np.array([1.5, -0.25, 65504], np.float16)),
        helper.make_tensor("bf16", T.BFLOAT16, [2], [1.0, -3.0]),
        helper.make_tensor("bool", T.BOOL, [4], [True, False, False, True]),
        helper.make_tensor("i64", T.INT64, [2], [-(2**63), 2**63 - 1]),
        helper.make_tensor("f64", T.DOUBLE, [2], [np.pi, -1e300]),
        helper.make_tensor("u32", T.UINT32, [2], [0, 2**32 - 1]),
        helper.make_tensor("u64", T.UINT64, [2], [1, 2**64 - 1]),
        helper.make_tensor("str", T.STRING, [3], [b"alpha", b"", "ß".encode()]),
        helper.make_tensor("scalar_f32", T.FLOAT, [], [42.0]),
    ]
    for t in tensors:
        assert not t.HasField("raw_data"), t.name
    return identity_model("typed_fields", tensors)


def low_precision_tensors(exotic: bool) -> list[TensorProto]:
    """Low-precision initializers, each both in raw_data and in int32_data."""
    T = TensorProto
    tensors = []
    for sfx in ("raw", "typed"):
        if exotic:
            tensors += [
                helper.make_tensor(f"f8e8m0_{sfx}", T.FLOAT8E8M0, [2], [1.0, 8.0]),
                helper.make_tensor(f"f4e2m1_{sfx}", T.FLOAT4E2M1, [3], [0.5, -6.0, 1.0]),
                helper.make_tensor(f"u2_{sfx}", T.UINT2, [5], [0, 1, 2, 3, 1]),
                helper.make_tensor(f"i2_{sfx}", T.INT2, [3], [-2, -1, 1]),
            ]
        else:
            tensors += [
                helper.make_tensor(f"i4_{sfx}", T.INT4, [5], [-8, -1, 0, 3, 7]),
                helper.make_tensor(f"u4_{sfx}", T.UINT4, [3], [0, 9, 15]),
                helper.make_tensor(f"f8e4m3fn_{sfx}", T.FLOAT8E4M3FN, [3], [1.0, -2.0, 448.0]),
                helper.make_tensor(f"f8e4m3fnuz_{sfx}", T.FLOAT8E4M3FNUZ, [2], [0.5, -1.0]),
                helper.make_tensor(f"f8e5m2_{sfx}", T.FLOAT8E5M2, [2], [3.0, -0.125]),
                helper.make_tensor(f"f8e5m2fnuz_{sfx}", T.FLOAT8E5M2FNUZ, [2], [4.0, 0.0]),
            ]
    # helper.make_tensor stores these in int32_data; move the "raw" ones to raw_data.
    for t in tensors:
        assert t.int32_data, t.name
        if t.name.endswith("_raw"):
            arr = numpy_helper.to_array(t)
            t.CopyFrom(numpy_helper.from_array(arr, t.name))
            assert t.HasField("raw_data"), t.name
    return tensors


def low_precision_model() -> onnx.ModelProto:
    """int4 / uint4 / float8 initializers (Identity-21 accepts them: runnable)."""
    return identity_model("low_precision", low_precision_tensors(False), opset=21)


def low_precision_exotic_model() -> onnx.ModelProto:
    """float8e8m0 / float4e2m1 / int2 / uint2 initializers (opset 25: not runnable in ORT)."""
    return identity_model("low_precision_exotic", low_precision_tensors(True), opset=25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="folder for the models (created if missing)")
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)

    models = {
        "kitchen_sink": kitchen_sink(),
        "function": function_model(),
        "control_flow": control_flow_model(),
        "typed_fields": typed_fields_model(),
        "low_precision": low_precision_model(),
        "low_precision_exotic": low_precision_exotic_model(),
    }
    for name, model in models.items():
        onnx.save_model(model, os.path.join(args.out_dir, f"{name}.onnx"))

    ext = os.path.join(args.out_dir, "external_data.onnx")
    data_file = "external_data.onnx.data"
    # onnx appends to an existing data file, so start from scratch.
    if os.path.exists(os.path.join(args.out_dir, data_file)):
        os.remove(os.path.join(args.out_dir, data_file))
    onnx.save_model(
        external_data_model(),
        ext,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data_file,
        size_threshold=0,
        convert_attribute=True,
    )
    # The runnable models must be valid ONNX.
    for name in ("function", "control_flow", "typed_fields", "low_precision", "external_data"):
        onnx.checker.check_model(os.path.join(args.out_dir, f"{name}.onnx"), full_check=True)
    print(f"wrote {len(models) + 1} models to {args.out_dir}")


if __name__ == "__main__":
    main()
