#!/usr/bin/env python3
"""Write the ONNX backend test cases (node tests and the small model tests) to a folder.

The installed onnx wheel carries the node-test definitions as Python code
(``onnx.backend.test.case.node.collect_testcases``), not as data, so this script
materialises them in the layout of the ONNX repository's ``backend/test/data``:

    OUT_DIR/<case>/model.onnx
    OUT_DIR/<case>/test_data_set_0/input_<i>.pb     (TensorProto, or SequenceProto /
    OUT_DIR/<case>/test_data_set_0/output_<i>.pb     OptionalProto / MapProto by graph type)

It also copies the cases that the wheel ships as data folders
(``onnx/backend/test/data/{simple,pytorch-converted,pytorch-operator}``) and rebuilds the
``light`` model cases (weight-free copies of the ONNX model zoo CNNs) the way the ONNX
backend test runner does: input = arange(n)/n in float32 with symbolic dims set to 1,
expected output = the ``light_<model>_output_0.pb`` shipped in the wheel.

``OUT_DIR/manifest.json`` is an object::

    {"onnx_version": "1.23.2", "generator_version": N, "counts": {...},
     "skipped": [{"name", "source", "reason"}],
     "cases": [{"name", "dir", "source", "kind", "inputs", "outputs", "datasets",
                "opset", "opsets", "ops", "dtypes", "rtol", "atol"[, "ort", "ort_detail"]}]}

``kind`` is "tensor" when every graph input and output is a plain tensor, else "non-tensor"
(sequence / optional / map / sparse). ``opset`` is the ai.onnx opset (null if absent),
``opsets`` maps every imported domain to its version, ``ops`` lists the op types used
anywhere in the model (subgraphs and model-local functions included; ops outside the
ai.onnx domain are written ``domain:OpType``), ``dtypes`` the element types of the graph
inputs and outputs (lower-case TensorProto names, e.g. "float", "int64", "string").
``dir`` is relative to OUT_DIR. ``rtol`` / ``atol`` are the tolerances the ONNX backend
test runner uses for the case (numpy.testing.assert_allclose semantics).

With --ort-check every case is also run with ONNX Runtime (CPU, 1 thread) and compared the
way the ONNX backend runner compares; each case then gets ``ort``: "pass", "mismatch"
(wrong values / shapes / dtypes), "error" (ORT failed while running) or "unsupported" (ORT
refused to load the model: op, opset or type not implemented), plus ``ort_detail``, and the
manifest gets ``ort_version``. A case that ORT fails often has reference data that no
runtime can match (random ops such as training-mode Dropout) or uses a newer opset.

The run is skipped when OUT_DIR/manifest.json exists with the same onnx version and
generator version (use --force to regenerate). OUT_DIR is owned by this script: on
regeneration it is replaced as a whole, so it must be empty, absent, or a previous output.
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
import io
import json
import shutil
import warnings

import numpy as np
import onnx
from onnx import numpy_helper

GENERATOR_VERSION = 2
ONNX_PKG_DIR = Path(onnx.__file__).resolve().parent
DATA_DIR = ONNX_PKG_DIR / "backend" / "test" / "data"
COPIED_SOURCES = ["simple", "pytorch-converted", "pytorch-operator"]


# ---------------------------------------------------------------------------------------
# model inspection
# ---------------------------------------------------------------------------------------


def _value_kind(vi: onnx.ValueInfoProto) -> str:
    """'tensor' for a plain tensor type, otherwise the name of the type case."""
    which = vi.type.WhichOneof("value")
    return "tensor" if which == "tensor_type" else (which or "untyped")


def _collect_ops(graph: onnx.GraphProto, out: set[str]) -> None:
    for node in graph.node:
        dom = node.domain
        out.add(node.op_type if dom in ("", "ai.onnx") else f"{dom}:{node.op_type}")
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _collect_ops(attr.g, out)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    _collect_ops(g, out)


def _dtype_names(values: list[onnx.ValueInfoProto]) -> set[str]:
    names = set()

    def visit(tp: onnx.TypeProto) -> None:
        which = tp.WhichOneof("value")
        if which == "tensor_type":
            names.add(onnx.TensorProto.DataType.Name(tp.tensor_type.elem_type).lower())
        elif which == "sparse_tensor_type":
            names.add(onnx.TensorProto.DataType.Name(tp.sparse_tensor_type.elem_type).lower())
        elif which == "sequence_type":
            visit(tp.sequence_type.elem_type)
        elif which == "optional_type":
            visit(tp.optional_type.elem_type)
        elif which == "map_type":
            names.add(onnx.TensorProto.DataType.Name(tp.map_type.key_type).lower())
            visit(tp.map_type.value_type)

    for vi in values:
        visit(vi.type)
    return names


def describe_model(model: onnx.ModelProto) -> dict:
    g = model.graph
    inits = {t.name for t in g.initializer} | {t.values.name for t in g.sparse_initializer}
    real_inputs = [vi for vi in g.input if vi.name not in inits]
    kinds = [_value_kind(vi) for vi in real_inputs] + [_value_kind(vi) for vi in g.output]
    ops: set[str] = set()
    _collect_ops(g, ops)
    for fn in model.functions:
        for node in fn.node:
            dom = node.domain
            ops.add(node.op_type if dom in ("", "ai.onnx") else f"{dom}:{node.op_type}")
    opsets = {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}
    return {
        "kind": "tensor" if all(k == "tensor" for k in kinds) else "non-tensor",
        "opset": opsets.get("ai.onnx"),
        "opsets": opsets,
        "ops": sorted(ops),
        "dtypes": sorted(_dtype_names(real_inputs + list(g.output))),
    }


# ---------------------------------------------------------------------------------------
# serialisation of test values
# ---------------------------------------------------------------------------------------


def _to_proto(value, vi: onnx.ValueInfoProto):
    """Serialises one input/output value according to the graph's declared type."""
    which = vi.type.WhichOneof("value")
    name = vi.name
    if which == "map_type":
        return numpy_helper.from_dict(value, name)
    if which == "sequence_type":
        elem = vi.type.sequence_type.elem_type
        dtype = None
        if not value and elem.WhichOneof("value") == "tensor_type":
            dtype = onnx.SequenceProto.TENSOR
        return numpy_helper.from_list([_as_array(v) for v in value], name, dtype)
    if which == "optional_type":
        if value is None:
            return numpy_helper.from_optional(None, name)
        if isinstance(value, list):
            return numpy_helper.from_optional([_as_array(v) for v in value], name)
        return numpy_helper.from_optional(_as_array(value), name)
    if which == "tensor_type" or which is None:
        if isinstance(value, onnx.TensorProto):
            t = onnx.TensorProto()
            t.CopyFrom(value)
            if not t.name:
                t.name = name
            return t
        if isinstance(value, (list, dict)) or value is None:
            raise TypeError(f"value of type {type(value).__name__} for tensor {name!r}")
        return numpy_helper.from_array(_as_array(value), name)
    raise TypeError(f"unsupported graph value type {which!r} for {name!r}")


def _as_array(v):
    if isinstance(v, (onnx.TensorProto, list, dict, np.ndarray)) or v is None:
        return v
    return np.asarray(v)


# ---------------------------------------------------------------------------------------
# case producers
# ---------------------------------------------------------------------------------------


def node_cases():
    """Yields onnx TestCase objects for every node test (warnings of the generators muted)."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()):
            cases = list(collect_testcases(None))
    return cases


def write_node_case(case, case_dir: Path) -> dict:
    model = case.model
    g = model.graph
    case_dir.mkdir(parents=True)
    protos = []
    for ds_idx, (inputs, outputs) in enumerate(case.data_sets):
        if len(inputs) > len(g.input) or len(outputs) > len(g.output):
            raise ValueError("more values than graph inputs/outputs")
        for j, v in enumerate(inputs):
            protos.append((f"test_data_set_{ds_idx}/input_{j}.pb", _to_proto(v, g.input[j])))
        for j, v in enumerate(outputs):
            protos.append((f"test_data_set_{ds_idx}/output_{j}.pb", _to_proto(v, g.output[j])))
    (case_dir / "model.onnx").write_bytes(model.SerializeToString())
    for rel, proto in protos:
        p = case_dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(proto.SerializeToString())
    inputs, outputs = case.data_sets[0]
    return {
        "inputs": len(inputs),
        "outputs": len(outputs),
        "datasets": len(case.data_sets),
        **describe_model(model),
        "rtol": case.rtol,
        "atol": case.atol,
    }


def copied_cases(source: str):
    """Yields (name, src_dir) for wheel data folders holding model.onnx + test_data_set_*."""
    root = DATA_DIR / source
    if not root.is_dir():
        return
    for d in sorted(root.iterdir()):
        if d.is_dir():
            yield d.name, d


def write_copied_case(src: Path, case_dir: Path) -> dict:
    if not (src / "model.onnx").is_file():
        raise FileNotFoundError("no model.onnx (data must be downloaded)")
    sets = sorted(p for p in src.glob("test_data_set_*") if p.is_dir())
    if not sets:
        raise FileNotFoundError("no test_data_set_*")
    model = onnx.load(str(src / "model.onnx"))
    shutil.copytree(src, case_dir)
    return {
        "inputs": len(list(sets[0].glob("input_*.pb"))),
        "outputs": len(list(sets[0].glob("output_*.pb"))),
        "datasets": len(sets),
        **describe_model(model),
        "rtol": 1e-3,
        "atol": 1e-7,
    }


def light_cases():
    """Yields (name, model_path) for the light model-zoo copies in the wheel."""
    root = DATA_DIR / "light"
    if not root.is_dir():
        return
    for p in sorted(root.glob("light_*.onnx")):
        yield "test_" + p.stem[len("light_"):], p


def write_light_case(model_path: Path, case_dir: Path) -> dict:
    """Rebuilds a light case like onnx.backend.test.runner does (deterministic dummy input)."""
    model = onnx.load(str(model_path))
    g = model.graph
    prefix = model_path.with_suffix("")
    expected = [Path(f"{prefix}_output_{i}.pb") for i in range(len(g.output))]
    missing = [p.name for p in expected if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"missing expected outputs {missing}")
    inits = {t.name for t in g.initializer}
    ds = case_dir / "test_data_set_0"
    ds.mkdir(parents=True)
    shutil.copyfile(model_path, case_dir / "model.onnx")
    n_in = 0
    for vi in g.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        if vi.type.WhichOneof("value") != "tensor_type" or tt.elem_type != onnx.TensorProto.FLOAT:
            raise TypeError(f"input {vi.name!r} is not a float tensor")
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in tt.shape.dim)
        n = int(np.prod(shape))
        value = (np.arange(n).reshape(shape) / n).astype(np.float32)
        (ds / f"input_{n_in}.pb").write_bytes(numpy_helper.from_array(value, vi.name).SerializeToString())
        n_in += 1
    for i, p in enumerate(expected):
        t = onnx.TensorProto()
        t.ParseFromString(p.read_bytes())
        if not t.name:
            t.name = g.output[i].name
        (ds / f"output_{i}.pb").write_bytes(t.SerializeToString())
    tol = {"rtol": 1e-3, "atol": 1e-7}
    real = DATA_DIR / "real" / case_dir.name / "data.json"
    if real.is_file():
        meta = json.loads(real.read_text())
        tol = {"rtol": meta.get("rtol", 1e-3), "atol": meta.get("atol", 1e-7)}
    return {"inputs": n_in, "outputs": len(expected), "datasets": 1, **describe_model(model), **tol}


# ---------------------------------------------------------------------------------------
# optional ONNX Runtime check
# ---------------------------------------------------------------------------------------


def _load_value(path: Path, vi: onnx.ValueInfoProto):
    data = path.read_bytes()
    which = vi.type.WhichOneof("value")
    if which == "sequence_type":
        p = onnx.SequenceProto()
        p.ParseFromString(data)
        return numpy_helper.to_list(p)
    if which == "optional_type":
        p = onnx.OptionalProto()
        p.ParseFromString(data)
        return numpy_helper.to_optional(p)
    if which == "map_type":
        p = onnx.MapProto()
        p.ParseFromString(data)
        return numpy_helper.to_dict(p)
    t = onnx.TensorProto()
    t.ParseFromString(data)
    return numpy_helper.to_array(t)


def _assert_similar(ref, out, rtol: float, atol: float) -> None:
    """Mirrors onnx.backend.test.runner.Runner.assert_similar_outputs for one value."""
    if isinstance(ref, (list, tuple)):
        if not isinstance(out, (list, tuple)) or len(out) != len(ref):
            raise AssertionError(f"sequence mismatch: expected {len(ref)} items, got {type(out).__name__}")
        for r, o in zip(ref, out):
            _assert_similar(r, o, rtol, atol)
        return
    if ref is None or out is None:
        if not (ref is None and out is None):
            raise AssertionError(f"optional mismatch: expected {type(ref).__name__}, got {type(out).__name__}")
        return
    out = np.asarray(out)
    if out.shape != ref.shape:
        raise AssertionError(f"shape {list(out.shape)} != expected {list(ref.shape)}")
    if ref.dtype == object:
        np.testing.assert_array_equal(out, ref)
        return
    if out.dtype != ref.dtype:
        raise AssertionError(f"dtype {out.dtype} != expected {ref.dtype}")
    if out.dtype.name == "bfloat16":
        rtol = max(rtol, 2**-6)
        out, ref = out.astype(np.float32), ref.astype(np.float32)
    np.testing.assert_allclose(out, ref, rtol=rtol, atol=atol)


def ort_check(out_dir: Path, manifest: dict) -> None:
    import onnxruntime as ort

    ort.set_default_logger_severity(4)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 4
    def clean(e: Exception) -> str:  # one line, no machine-specific paths
        return " ".join(str(e).replace(str(out_dir) + os.sep, "").split())[:300]

    for c in manifest["cases"]:
        d = out_dir / c["dir"]
        try:
            model = onnx.load(str(d / "model.onnx"))
            sess = ort.InferenceSession(str(d / "model.onnx"), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001
            c["ort"], c["ort_detail"] = "unsupported", clean(e)
            continue
        g = model.graph
        inits = {t.name for t in g.initializer}
        gin = [v for v in g.input if v.name not in inits]
        status, detail = "pass", ""
        for ds in sorted(p for p in d.glob("test_data_set_*") if p.is_dir()):
            n_in = len(list(ds.glob("input_*.pb")))
            n_out = len(list(ds.glob("output_*.pb")))
            try:
                feeds = {gin[i].name: _load_value(ds / f"input_{i}.pb", gin[i]) for i in range(n_in)}
                refs = [_load_value(ds / f"output_{i}.pb", g.output[i]) for i in range(n_out)]
                outs = sess.run([o.name for o in g.output[:n_out]], feeds)
            except Exception as e:  # noqa: BLE001
                status, detail = "error", clean(e)
                break
            try:
                for i, (r, o) in enumerate(zip(refs, outs)):
                    try:
                        _assert_similar(r, o, c["rtol"], c["atol"])
                    except AssertionError as e:
                        raise AssertionError(f"output {i} ({g.output[i].name}): " + " ".join(str(e).split())) from None
            except AssertionError as e:
                status, detail = "mismatch", str(e)[:300]
                break
        c["ort"] = status
        if detail:
            c["ort_detail"] = detail
    manifest["ort_version"] = ort.__version__
    counts = manifest["counts"]
    counts["ort"] = {}
    for c in manifest["cases"]:
        counts["ort"][c["ort"]] = counts["ort"].get(c["ort"], 0) + 1


# ---------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------


def generate(out_dir: Path) -> dict:
    cases: list[dict] = []
    skipped: list[dict] = []
    used: set[str] = set()

    def unique(name: str, source: str) -> str:
        if name not in used:
            return name
        alt = f"{name}__{source}"
        i = 2
        while alt in used:
            alt = f"{name}__{source}{i}"
            i += 1
        return alt

    def run(name: str, source: str, fn, *args):
        dirname = unique(name, source)
        case_dir = out_dir / dirname
        try:
            info = fn(*args, case_dir)
        except Exception as e:  # noqa: BLE001 - every failure is recorded, not fatal
            shutil.rmtree(case_dir, ignore_errors=True)
            skipped.append({"name": name, "source": source, "reason": f"{type(e).__name__}: {e}"})
            return
        used.add(dirname)
        cases.append({"name": dirname, "dir": dirname, "source": source, **info})

    for case in node_cases():
        run(case.name, "node", write_node_case, case)
    for source in COPIED_SOURCES:
        for name, src in copied_cases(source):
            run(name, source, write_copied_case, src)
    for name, path in light_cases():
        run(name, "light", write_light_case, path)

    counts = {
        "total": len(cases),
        "tensor": sum(c["kind"] == "tensor" for c in cases),
        "non_tensor": sum(c["kind"] != "tensor" for c in cases),
        "skipped": len(skipped),
        "by_source": {},
    }
    for c in cases:
        s = counts["by_source"].setdefault(c["source"], {"total": 0, "tensor": 0})
        s["total"] += 1
        s["tensor"] += c["kind"] == "tensor"
    return {
        "onnx_version": onnx.__version__,
        "generator_version": GENERATOR_VERSION,
        "counts": counts,
        "skipped": skipped,
        "cases": cases,
    }


def print_counts(manifest: dict, out_dir: Path, cached: bool) -> None:
    c = manifest["counts"]
    state = "up to date (use --force to regenerate)" if cached else "written"
    print(f"{out_dir}: {state}, onnx {manifest['onnx_version']}")
    for source, s in sorted(c["by_source"].items()):
        print(f"  {source:<18} {s['total']:5d} cases, {s['tensor']:5d} tensor-only")
    print(f"  total: {c['total']} cases, {c['tensor']} tensor-only, "
          f"{c['non_tensor']} non-tensor, {c['skipped']} skipped")
    if "ort" in c:
        ort_counts = ", ".join(f"{v} {k}" for k, v in sorted(c["ort"].items()))
        print(f"  ONNX Runtime {manifest.get('ort_version')} check: {ort_counts}")
    for s in manifest["skipped"]:
        print(f"  skipped {s['source']}/{s['name']}: {s['reason']}")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="See the module docstring (head of this file) for the manifest format.",
    )
    ap.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="folder to write (owned by this script)")
    ap.add_argument("--force", action="store_true", help="regenerate even if the manifest is current")
    ap.add_argument("--ort-check", action="store_true",
                    help="also run every case with ONNX Runtime and record the result (about a minute)")
    args = ap.parse_args()

    out_dir: Path = args.out_dir.resolve()
    manifest_path = out_dir / "manifest.json"
    if manifest_path.is_file() and not args.force:
        try:
            old = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            old = {}
        if (old.get("onnx_version") == onnx.__version__
                and old.get("generator_version") == GENERATOR_VERSION):
            if args.ort_check and "ort_version" not in old:
                ort_check(out_dir, old)
                tmp_manifest = manifest_path.with_name("manifest.json.part")
                tmp_manifest.write_text(json.dumps(old, indent=1) + "\n")
                tmp_manifest.replace(manifest_path)
                print_counts(old, out_dir, cached=False)
                return 0
            print_counts(old, out_dir, cached=True)
            return 0

    if out_dir.exists() and any(out_dir.iterdir()) and not manifest_path.is_file():
        print(f"error: {out_dir} is not empty and has no manifest.json; refusing to replace it",
              file=sys.stderr)
        return 2

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        manifest = generate(tmp)
        if args.ort_check:
            ort_check(tmp, manifest)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        if out_dir.exists():
            old_dir = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            out_dir.rename(old_dir)
            tmp.rename(out_dir)
            shutil.rmtree(old_dir)
        else:
            tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_counts(manifest, out_dir, cached=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
