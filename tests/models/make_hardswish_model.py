"""A MobileNetV3-family test model: hard-swish and hard-sigmoid gates.

Takes the shared swish/SE CIFAR-10 network (MBConv blocks with squeeze-and-excitation) and
gives it MobileNetV3's gates: every swish `x * Sigmoid(x)` becomes `HardSwish(x)`
(x * relu6(x + 3) / 6) and every squeeze-and-excitation gate `Sigmoid` becomes
`HardSigmoid(alpha=1/6, beta=0.5)` (relu6(x + 3) / 6), as MobileNetV3 replaced EfficientNet's
gates. The weights are the swish network's, unchanged (MobileNetV3's gates were designed as
drop-in approximations; the model keeps most of its accuracy, see the printout), so this
needs no training data and is reproducible byte for byte.

With `--images DIR --logits OUT.npy`, also writes ONNX Runtime's logits for the PNG images
in DIR (sorted, the `cifar` recipe: x/255, NCHW) as an independent reference, and prints
ONNX Runtime's top-1 on them with `labels.csv`.

    python3 tests/models/make_hardswish_model.py SRC.onnx OUT.onnx [--images DIR --logits OUT.npy]
"""

import argparse
import csv
import os

import numpy as np
import onnx
from onnx import helper


def convert(model: onnx.ModelProto) -> onnx.ModelProto:
    graph = model.graph
    consumers = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    nodes = []
    dropped = set()
    swish = hsig = 0
    for n in graph.node:
        if id(n) in dropped:
            continue
        if n.op_type == "Sigmoid":
            x, s = n.input[0], n.output[0]
            users = consumers.get(s, [])
            # x * Sigmoid(x): the sigmoid's only reader multiplies it by its own input.
            if len(users) == 1 and users[0].op_type == "Mul" and sorted(users[0].input) == sorted([x, s]):
                mul = users[0]
                dropped.add(id(mul))
                nodes.append(helper.make_node("HardSwish", [x], [mul.output[0]], name=mul.name + "/HardSwish"))
                swish += 1
                continue
            nodes.append(helper.make_node("HardSigmoid", [x], [s], name=n.name + "/HardSigmoid", alpha=1.0 / 6.0, beta=0.5))
            hsig += 1
            continue
        nodes.append(n)
    del graph.node[:]
    graph.node.extend(nodes)
    # HardSwish is an opset-14 operator.
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = max(o.version, 14)
    model.producer_name = "amos tests/models/make_hardswish_model.py"
    onnx.checker.check_model(model)
    print(f"{swish} swish -> HardSwish, {hsig} sigmoid -> HardSigmoid")
    return model


def reference(path: str, images: str, logits_out: str) -> None:
    import onnxruntime as ort
    from PIL import Image

    files = sorted(f for f in os.listdir(images) if f.endswith(".png"))
    x = np.stack(
        [np.asarray(Image.open(os.path.join(images, f)).convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0 for f in files]
    )
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    logits = np.concatenate([session.run(None, {"input": x[i : i + 200]})[0] for i in range(0, len(x), 200)])
    np.save(logits_out, logits.astype(np.float32))
    labels_file = os.path.join(images, "labels.csv")
    if os.path.exists(labels_file):
        with open(labels_file) as f:
            labels = {r["file"]: int(r["label"]) for r in csv.DictReader(f)}
        top1 = np.mean([labels[f] == int(np.argmax(l)) for f, l in zip(files, logits)])
        print(f"ONNX Runtime top-1 on {len(files)} images: {100 * top1:.2f}%")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source")
    p.add_argument("output")
    p.add_argument("--images")
    p.add_argument("--logits")
    a = p.parse_args()
    onnx.save(convert(onnx.load(a.source)), a.output)
    if a.images and a.logits:
        reference(a.output, a.images, a.logits)


if __name__ == "__main__":
    main()
