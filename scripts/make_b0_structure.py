"""EfficientNet-B0's structure as an ONNX file, with random weights, for benchmarks.

The swish/squeeze-and-excitation speed target of the engine is stated for EfficientNet-B0 at
224×224, and no trained B0 ships here; speed does not depend on the weights, so this builds
the torchvision B0 graph (stem, 16 MBConv blocks with swish `x * Sigmoid(x)` and SE, head,
classifier; batch norms folded into convolution biases) with seeded He-initialised weights.

    python3 scripts/make_b0_structure.py OUT.onnx
    amos-convert convert OUT.onnx -o b0.amos --preset torchvision
    amos-convert bench b0.amos --onnx OUT.onnx --batch 16 --threads 2
"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# (expand ratio, kernel, stride, output channels, repeats), torchvision's efficientnet_b0.
STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]


class Builder:
    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, array, base):
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def conv(self, x, cin, cout, k, stride=1, groups=1):
        fan_in = cin // groups * k * k
        w = self.rng.normal(0, np.sqrt(2.0 / fan_in), (cout, cin // groups, k, k))
        b = self.rng.normal(0, 0.1, cout)
        y = self.name("conv")
        self.nodes.append(helper.make_node(
            "Conv", [x, self.const(w, "w"), self.const(b, "b")], [y], name=y,
            kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, group=groups))
        return y

    def op(self, kind, inputs, **attrs):
        y = self.name(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [y], name=y, **attrs))
        return y

    def swish(self, x):
        return self.op("Mul", [x, self.op("Sigmoid", [x])])


def build():
    g = Builder()
    x = g.swish(g.conv("input", 3, 32, 3, 2))
    cin = 32
    for expand, k, stride, cout, repeats in STAGES:
        for r in range(repeats):
            s = stride if r == 0 else 1
            mid = cin * expand
            h = g.swish(g.conv(x, cin, mid, 1)) if expand != 1 else x
            h = g.swish(g.conv(h, mid, mid, k, s, groups=mid))
            se = max(1, cin // 4)
            gate = g.op("Sigmoid", [g.conv(g.swish(g.conv(g.op("GlobalAveragePool", [h]), mid, se, 1)), se, mid, 1)])
            h = g.conv(g.op("Mul", [h, gate]), mid, cout, 1)
            x = g.op("Add", [h, x]) if s == 1 and cin == cout else h
            cin = cout
    x = g.op("Flatten", [g.op("GlobalAveragePool", [g.swish(g.conv(x, cin, 1280, 1))])])
    w = g.rng.normal(0, np.sqrt(1.0 / 1280), (1000, 1280))
    logits = g.op("Gemm", [x, g.const(w, "fc_w"), g.const(np.zeros(1000), "fc_b")], transB=1)
    graph = helper.make_graph(
        g.nodes, "efficientnet_b0_structure",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["N", 1000])], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="amos scripts/make_b0_structure.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    onnx.save(build(), sys.argv[1])
