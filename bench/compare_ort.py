#!/usr/bin/env python3
"""Benchmark kvant against ONNX Runtime on one model: latency (median, p90) and peak RSS.

For each --threads value it alternates the two engines in --rounds rounds (drift in clock
speed or background load then hits both alike), splitting --iters over the rounds:

  * kvant: `kvant bench MODEL --threads N --iters K --json --input IN.npz`, one process per
    round; its stdout must be one JSON object with at least median_ms, p90_ms, threads,
    peak_rss_mb (kvant does its own warm-up).
  * ONNX Runtime: one worker subprocess per thread count (this script, run with the same
    Python) holding an InferenceSession (CPUExecutionProvider, ORT_ENABLE_ALL,
    intra_op_num_threads=N, inter_op_num_threads=1, sequential execution); it does --warmup
    runs after session creation and one more at the start of every round, then times K
    runs. Its peak RSS is the worker's VmHWM (whole process: Python, numpy and onnxruntime
    included; the JSON also gives the RSS before the session was created).

Reported median / p90 are the medians over rounds of each round's median / p90 (the same
for both engines; the JSON also holds ORT's pooled statistics). Inputs: --input, or else a
file made by scripts/make_inputs.py (seed 0) that both engines get. Without --ort-only, a
missing kvant binary is an error (exit 2); a failing kvant run makes the exit status 1.
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
import json
import statistics
import subprocess
import tempfile
import time

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))


# ---------------------------------------------------------------------------------------
# ORT worker (runs in a child process)
# ---------------------------------------------------------------------------------------


def _rss_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def ort_worker(model: str, npz: str, threads: int) -> int:
    import resource

    import onnxruntime as ort

    from npzio import load_npz
    from ort_run import prepare_feeds

    out = sys.stdout
    sys.stdout = sys.stderr  # keep the protocol channel clean
    base_mb = _rss_mb("VmRSS")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    t0 = time.perf_counter()
    sess = ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - t0) * 1e3
    feeds = prepare_feeds(sess, load_npz(npz), warn=lambda m: print(m, file=sys.stderr))
    names = [o.name for o in sess.get_outputs()]
    out.write(json.dumps({"ready": True, "load_ms": load_ms, "base_mb": base_mb}) + "\n")
    out.flush()
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "run":
            for _ in range(cmd.get("warmup", 0)):
                sess.run(names, feeds)
            lat = []
            for _ in range(cmd["iters"]):
                t = time.perf_counter()
                sess.run(names, feeds)
                lat.append((time.perf_counter() - t) * 1e3)
            out.write(json.dumps({"lat_ms": lat}) + "\n")
        elif cmd["cmd"] == "exit":
            peak = _rss_mb("VmHWM")
            if peak is None:
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
            out.write(json.dumps({"peak_mb": peak}) + "\n")
            out.flush()
            return 0
        out.flush()
    return 0


class OrtWorker:
    def __init__(self, model: str, npz: str, threads: int):
        self.p = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--_ort-worker", model, npz, str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.hello = self._read()

    def _read(self) -> dict:
        line = self.p.stdout.readline()
        if not line:
            rc = self.p.wait()
            raise RuntimeError(f"ONNX Runtime worker exited (status {rc}); see its messages above")
        return json.loads(line)

    def _cmd(self, **cmd) -> dict:
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        return self._read()

    def run(self, iters: int, warmup: int) -> list[float]:
        return self._cmd(cmd="run", iters=iters, warmup=warmup)["lat_ms"]

    def close(self) -> float:
        peak = self._cmd(cmd="exit")["peak_mb"]
        self.p.wait(timeout=60)
        return peak


# ---------------------------------------------------------------------------------------
# kvant
# ---------------------------------------------------------------------------------------


class KvantError(RuntimeError):
    pass


def run_kvant(kvant: Path, model: str, threads: int, iters: int, npz: str) -> dict:
    cmd = [str(kvant), "bench", model, "--threads", str(threads), "--iters", str(iters), "--json", "--input", npz]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        tail = "\n".join(p.stderr.strip().splitlines()[-15:])
        raise KvantError(f"`{' '.join(cmd)}` exited with status {p.returncode}:\n{tail}")
    text = p.stdout.strip()
    obj = None
    try:
        obj = json.loads(text)
    except ValueError:
        for line in reversed(text.splitlines()):
            if line.lstrip().startswith("{"):
                try:
                    obj = json.loads(line)
                    break
                except ValueError:
                    continue
    if not isinstance(obj, dict):
        raise KvantError(f"`{' '.join(cmd)}` printed no JSON object on stdout; got:\n{text[-2000:]}")
    missing = [k for k in ("median_ms", "p90_ms", "peak_rss_mb") if k not in obj]
    if missing:
        raise KvantError(f"kvant bench JSON lacks {missing}: {obj}")
    return obj


# ---------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def split_iters(iters: int, rounds: int) -> list[int]:
    rounds = max(1, min(rounds, iters))
    return [iters // rounds + (1 if i < iters % rounds else 0) for i in range(rounds)]


def bench_one(args, model: str, npz: str, threads: int, kvant: Path | None) -> dict:
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    res: dict = {"model": model, "threads": threads, "iters": args.iters}
    worker = OrtWorker(model, npz, threads)
    ort_rounds, kv_rounds = [], []
    kv_error = None
    try:
        worker.run(0, args.warmup)
        for r, n in enumerate(split_iters(args.iters, args.rounds)):
            if kvant is not None and kv_error is None:
                try:
                    kv_rounds.append(run_kvant(kvant, model, threads, n, npz))
                except KvantError as e:
                    kv_error = str(e)
                    log(f"error: {e}")
            lat = worker.run(n, 1)
            ort_rounds.append(lat)
            kv_s = f"kvant {kv_rounds[-1]['median_ms']:.3f} ms, " if kv_rounds and len(kv_rounds) == r + 1 else ""
            log(f"  threads {threads} round {r + 1}: {kv_s}ORT {statistics.median(lat):.3f} ms ({n} iters)")
    finally:
        peak = worker.close() if worker.p.poll() is None else None
    pooled = [x for lat in ort_rounds for x in lat]
    res["ort"] = {
        "median_ms": statistics.median([statistics.median(x) for x in ort_rounds]),
        "p90_ms": statistics.median([pct(x, 0.9) for x in ort_rounds]),
        "pooled_median_ms": statistics.median(pooled),
        "pooled_p90_ms": pct(pooled, 0.9),
        "min_ms": min(pooled),
        "peak_rss_mb": peak,
        "base_rss_mb": worker.hello.get("base_mb"),
        "session_load_ms": worker.hello.get("load_ms"),
        "rounds": len(ort_rounds),
    }
    if kvant is not None:
        if kv_error is not None:
            res["kvant"] = {"error": kv_error}
        else:
            res["kvant"] = {
                "median_ms": statistics.median([float(k["median_ms"]) for k in kv_rounds]),
                "p90_ms": statistics.median([float(k["p90_ms"]) for k in kv_rounds]),
                "peak_rss_mb": max(float(k["peak_rss_mb"]) for k in kv_rounds),
                "threads_reported": kv_rounds[-1].get("threads"),
                "rounds": len(kv_rounds),
                "raw": kv_rounds,
            }
            res["ratio"] = res["kvant"]["median_ms"] / res["ort"]["median_ms"]
    return res


def fmt(v, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def table(results: list[dict]) -> str:
    rows = ["| model | threads | kvant median ms | ORT median ms | kvant/ORT | kvant peak MB | ORT peak MB |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        kv = r.get("kvant") or {}
        err = "error" in kv
        rows.append("| {} | {} | {} | {} | {} | {} | {} |".format(
            Path(r["model"]).name, r["threads"],
            "error" if err else fmt(kv.get("median_ms")), fmt(r["ort"]["median_ms"]),
            fmt(r.get("ratio"), ".2f"), "error" if err else fmt(kv.get("peak_rss_mb"), ".1f"),
            fmt(r["ort"]["peak_rss_mb"], ".1f")))
    return "\n".join(rows)


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--_ort-worker":
        return ort_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", metavar="MODEL", help="ONNX model file")
    ap.add_argument("--threads", type=int, nargs="+", default=[1], help="thread counts (default: 1)")
    ap.add_argument("--iters", type=int, default=50, help="timed runs per engine and thread count (default 50)")
    ap.add_argument("--rounds", type=int, default=5, help="alternation rounds the runs are split into (default 5)")
    ap.add_argument("--warmup", type=int, default=5, help="ORT warm-up runs after session creation (default 5)")
    ap.add_argument("--input", metavar="IN.npz", help="inputs (default: generated by scripts/make_inputs.py)")
    ap.add_argument("--kvant", type=Path, default=REPO / "target" / "release" / "kvant",
                    help="kvant binary (default: <repo>/target/release/kvant)")
    ap.add_argument("--ort-only", action="store_true", help="measure ONNX Runtime only")
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = ap.parse_args()

    model = str(Path(args.model).resolve())
    if not Path(model).is_file():
        print(f"error: model {args.model} not found", file=sys.stderr)
        return 2
    kvant = None
    if not args.ort_only:
        kvant = args.kvant.resolve()
        if not (kvant.is_file() and os.access(kvant, os.X_OK)):
            print(f"error: kvant binary not found or not executable: {kvant}\n"
                  f"       build it (cargo build --release) or pass --kvant PATH; "
                  f"use --ort-only to measure ONNX Runtime alone", file=sys.stderr)
            return 2

    with tempfile.TemporaryDirectory(prefix="kvant-bench-") as tmp:
        if args.input:
            npz = str(Path(args.input).resolve())
        else:
            from make_inputs import build_inputs
            from npzio import save_npz

            npz = str(Path(tmp) / "inputs.npz")
            save_npz(npz, build_inputs(model, seed=0))
            print(f"inputs: generated with make_inputs.py (seed 0) -> {npz}", file=sys.stderr)
        results = [bench_one(args, model, npz, t, kvant) for t in args.threads]

    if args.json:
        print(json.dumps({"model": model, "iters": args.iters, "rounds": args.rounds, "results": results}, indent=1))
    else:
        print(table(results))
    return 1 if any("error" in (r.get("kvant") or {}) for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
