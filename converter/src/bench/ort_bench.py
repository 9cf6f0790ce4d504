"""ONNX Runtime's ANN throughput for `amos-convert bench`, run by it as
`python3 -c SCRIPT MODEL.onnx INPUT.npy THREADS`: loads the model and the batch in
INPUT.npy, runs it once (warm-up), prints a JSON line {"version": ...}, then for each line
"run" on stdin runs the whole batch once and prints its seconds on a line, and for each line
"profile N" runs it in a second, profiled session (ONNX Runtime's `enable_profiling`) and prints
a JSON line {"nodes": [[op type, convolution kind, seconds], ...], "convs": [[weight shape,
seconds], ...]}: its nodes' times summed by operator type and, for convolutions, by their kind
("pointwise", "depthwise" or "kxk", from the weights' shape; "" for other operators), then
each convolution's own time with the shape of its weights, in the order the nodes ran; each
the median of N runs after a warm-up. Ends at the end of stdin. Driven a run at a time, its
runs interleave with ours, so that a machine that speeds up or slows down mid-benchmark
moves both sides alike."""

import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

model, input_path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])


def start_session(profile_prefix=None):
    """A session on `threads` intra-op threads, sequential; profiled to files named from
    `profile_prefix` when given."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


session = start_session()
feed = {session.get_inputs()[0].name: np.load(input_path)}
session.run(None, feed)
print(json.dumps({"version": ort.__version__}), flush=True)


def conv_kind(shapes):
    """A convolution's kind from its input and weight shapes (NCHW, [M, C/groups, kH, kW])."""
    if len(shapes) < 2 or len(shapes[1]) != 4:
        return "kxk"
    x, w = shapes[0], shapes[1]
    if w[1] == 1 and len(x) == 4 and x[1] == w[0] and w[0] > 1:
        return "depthwise"
    return "pointwise" if w[2:] == [1, 1] else "kxk"


def profile(runs):
    """Node times of the batch, by operator type and convolution kind, and per convolution
    in the order they ran: the medians of `runs` profiled runs after a warm-up."""
    with tempfile.TemporaryDirectory() as folder:
        s = start_session(os.path.join(folder, "ort"))
        for _ in range(1 + runs):
            s.run(None, feed)
        with open(s.end_profiling()) as f:
            events = json.load(f)
    starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")[1:]
    sums = [{} for _ in starts]
    # Per convolution: its weights' shape, and its seconds in each run.
    convs = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        run = sum(1 for start in starts if start <= e["ts"]) - 1
        if run < 0:
            continue
        args = e.get("args", {})
        op = args.get("op_name", "?")
        shapes = [next(iter(d.values())) for d in args.get("input_type_shape", [])]
        kind = conv_kind(shapes) if "Conv" in op and "Transpose" not in op else ""
        sums[run][(op, kind)] = sums[run].get((op, kind), 0.0) + e["dur"] * 1e-6
        if kind and len(shapes) >= 2:
            node = convs.setdefault(name, [shapes[1], [0.0] * len(starts)])
            node[1][run] += e["dur"] * 1e-6
    keys = sorted({key for run in sums for key in run})
    nodes = [[op, kind, statistics.median(run.get((op, kind), 0.0) for run in sums)]
             for op, kind in keys]
    # Dictionaries keep the order the nodes first ran in.
    return nodes, [[shape, statistics.median(times)] for shape, times in convs.values()]


for line in sys.stdin:
    request = line.split()
    if request[:1] == ["profile"] and len(request) == 2:
        nodes, convs = profile(int(request[1]))
        print(json.dumps({"nodes": nodes, "convs": convs}), flush=True)
    elif request == ["run"]:
        start = time.perf_counter()
        session.run(None, feed)
        print(time.perf_counter() - start, flush=True)
