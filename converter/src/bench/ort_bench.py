"""ONNX Runtime's ANN throughput for `amos-convert bench`, run by it as
`python3 -c SCRIPT MODEL.onnx INPUT.npy THREADS`: loads the model and the batch in
INPUT.npy, runs it once (warm-up), prints a JSON line {"version": ...}, then for each line
"run" on stdin runs the whole batch once and prints its seconds on a line; ends at the end of
stdin. Driven a run at a time, its runs interleave with ours, so that a machine that speeds
up or slows down mid-benchmark moves both sides alike."""

import json
import sys
import time

import numpy as np
import onnxruntime as ort

model, input_path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
feed = {session.get_inputs()[0].name: np.load(input_path)}
session.run(None, feed)
print(json.dumps({"version": ort.__version__}), flush=True)
for line in sys.stdin:
    if line.strip() != "run":
        continue
    start = time.perf_counter()
    session.run(None, feed)
    print(time.perf_counter() - start, flush=True)
