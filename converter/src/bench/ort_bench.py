"""ONNX Runtime's ANN throughput for `amos-convert bench` (run by it as
`python3 -c SCRIPT MODEL.onnx INPUT.npy THREADS RUNS`): one warm-up run, then RUNS timed runs
of the whole batch in INPUT.npy; prints JSON {"seconds": [...], "version": ...}."""

import json
import sys
import time

import numpy as np
import onnxruntime as ort

model, input_path, threads, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
feed = {session.get_inputs()[0].name: np.load(input_path)}
session.run(None, feed)
seconds = []
for _ in range(runs):
    start = time.perf_counter()
    session.run(None, feed)
    seconds.append(time.perf_counter() - start)
print(json.dumps({"seconds": seconds, "version": ort.__version__}))
