#!/usr/bin/env python3
"""Check that a model saved by kvant is the same model as the one it loaded.

Both files are parsed with onnx (external data loaded relative to each file). Every
TensorProto anywhere in the model (initializers, attribute tensors, sparse tensors,
subgraphs, functions, training info) is replaced by a canonical form: its numpy value
(numpy_helper.to_array) as raw bytes, or its strings, with the storage details cleared
(raw_data vs typed fields, external_data, data_location). The canonical protos must then
be exactly equal, field presence included. On failure the first differing lines of the
two text dumps are printed.

When ONNX Runtime can load the original model, both models are also run on the same
generated inputs and their outputs must be bitwise identical (NaNs compare equal).

Usage: check_roundtrip.py ORIGINAL SAVED [ORIGINAL SAVED ...] [--no-ort]
Several pairs can be checked in one run (one Python start for a whole test folder).
Exit status 0 when every pair matches, 1 when some differ, 2 on usage / load errors.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper
from google.protobuf.descriptor import FieldDescriptor


def canonical_tensor(t: TensorProto, base_dir: str) -> None:
    """Replaces the tensor's storage by its value, in place."""
    if t.data_type == TensorProto.STRING:
        # Strings only live in string_data: that already is the canonical form.
        return
    arr = numpy_helper.to_array(t, base_dir=base_dir)
    for field in (
        "raw_data",
        "float_data",
        "int32_data",
        "string_data",
        "int64_data",
        "double_data",
        "uint64_data",
        "external_data",
        "data_location",
    ):
        t.ClearField(field)
    # Shape and type are kept in dims / data_type; the bytes are the values.
        t.raw_data = np.ascontiguousarray(arr).tobytes()


def is_repeated(field: FieldDescriptor) -> bool:
    """Whether a field is repeated (protobuf 6 deprecates `label`)."""
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return field.label == FieldDescriptor.LABEL_REPEATED


def canonicalize(msg, base_dir: str) -> None:
    """Canonicalizes every TensorProto reachable from `msg`, in place."""
    if isinstance(msg, TensorProto):
        canonical_tensor(msg, base_dir)
        return
    for field, value in msg.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        if is_repeated(field):
            for item in value:
                canonicalize(item, base_dir)
        else:
            canonicalize(value, base_dir)


def load(path: str) -> onnx.ModelProto:
    """Parses a model and canonicalizes its tensors."""
    model = onnx.load(path, load_external_data=False)
    canonicalize(model, os.path.dirname(os.path.abspath(path)))
    return model


def proto_diff(a, b, limit: int = 40) -> str:
    """The first lines of a unified diff of two protos' text form."""
    lines = difflib.unified_diff(
        str(a).splitlines(), str(b).splitlines(), "original", "saved", lineterm="", n=2
    )
    out = list(lines)
    more = f"\n... {len(out) - limit} more lines" if len(out) > limit else ""
    return "\n".join(out[:limit]) + more


def make_inputs(sess) -> dict | None:
    """Deterministic inputs for a session; None when an input is not a plain tensor."""
    rng = np.random.default_rng(0)
    feeds = {}
    for inp in sess.get_inputs():
        if not inp.type.startswith("tensor("):
            return None
        elem = inp.type[len("tensor(") : -1]
        shape = [d if isinstance(d, int) and d >= 0 else 2 for d in inp.shape]
        if elem == "float":
            feeds[inp.name] = rng.standard_normal(shape).astype(np.float32)
        elif elem == "double":
            feeds[inp.name] = rng.standard_normal(shape)
        elif elem == "float16":
            feeds[inp.name] = rng.standard_normal(shape).astype(np.float16)
        elif elem == "bool":
            feeds[inp.name] = rng.integers(0, 2, shape).astype(bool)
        elif elem in ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"):
            # No zeros: integer division by zero kills the process (SIGFPE) inside ORT.
            feeds[inp.name] = rng.integers(1, 4, shape).astype(np.dtype(elem))
        elif elem == "string":
            feeds[inp.name] = np.array(["a"] * int(np.prod(shape)), dtype=object).reshape(shape)
        else:
            return None
    return feeds


def same_array(a, b) -> bool:
    """Bitwise equality of two arrays (NaN payloads included), or of two sequences."""
    if isinstance(a, list) or isinstance(b, list):
        return (
            isinstance(a, list)
            and isinstance(b, list)
            and len(a) == len(b)
            and all(same_array(x, y) for x, y in zip(a, b))
        )
    if a is None or b is None:
        return a is None and b is None
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == object:
        return a.tolist() == b.tolist()
    return np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def compare_ort(original: str, saved: str) -> str | None:
    """Runs both models in ONNX Runtime; a message when outputs differ, else None."""
    try:
        import onnxruntime as ort
    except ImportError:
        print("note: onnxruntime is not installed; outputs not compared")
        return None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    try:
        sess_a = ort.InferenceSession(original, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - any ORT refusal means "not runnable"
        print(f"note: ONNX Runtime cannot load the original ({str(e).splitlines()[0]})")
        return None
    feeds = make_inputs(sess_a)
    if feeds is None:
        print("note: the model has non-tensor inputs; outputs not compared")
        return None
    try:
        out_a = sess_a.run(None, feeds)
    except Exception as e:  # noqa: BLE001
        print(f"note: ONNX Runtime cannot run the original ({str(e).splitlines()[0]})")
        return None
    try:
        sess_b = ort.InferenceSession(saved, opts, providers=["CPUExecutionProvider"])
        out_b = sess_b.run(None, feeds)
    except Exception as e:  # noqa: BLE001
        return f"ONNX Runtime runs the original but not the saved model: {e}"
    names = [o.name for o in sess_a.get_outputs()]
    for name, a, b in zip(names, out_a, out_b):
        if not same_array(a, b):
            return f"output '{name}' differs between original and saved model"
    print(f"ort: {len(names)} outputs identical")
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "models", nargs="+", metavar="ORIGINAL SAVED", help="pairs of original and saved model"
    )
    parser.add_argument("--no-ort", action="store_true", help="skip the ONNX Runtime run")
    args = parser.parse_args()
    # Verdicts so far must reach the caller even if ONNX Runtime crashes the process later.
    sys.stdout.reconfigure(line_buffering=True)
    if len(args.models) % 2:
        parser.error("models come in pairs: ORIGINAL SAVED")
    status = 0
    for original, saved in zip(args.models[::2], args.models[1::2]):
        status = max(status, check_pair(original, saved, not args.no_ort))
    return status


def check_pair(original: str, saved: str, run_ort: bool) -> int:
    """Checks one pair; prints the verdict and returns the exit status for it."""
    try:
        a, b = load(original), load(saved)
    except Exception as e:  # noqa: BLE001 - report any parse failure as a load error
        print(f"{saved}: error: cannot load the models: {e}")
        return 2
    # Message equality treats NaN floats as different; identical bytes settle that case.
    if a != b and a.SerializeToString(deterministic=True) != b.SerializeToString(
        deterministic=True
    ):
        print(f"{saved}: differs from {original}:\n{proto_diff(a, b)}")
        return 1
    if run_ort:
        problem = compare_ort(original, saved)
        if problem is not None:
            print(f"{saved}: {problem}")
            return 1
    print(f"{saved}: same model as {original}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
