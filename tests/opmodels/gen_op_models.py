#!/usr/bin/env python3
"""Generate small ONNX operator fixtures for the amos ONNX importer tests.

Usage: python3 tests/opmodels/gen_op_models.py OUTDIR

For every case this writes
    OUTDIR/<case>/model.onnx     the model (one input "input" [N,...], one output "output")
    OUTDIR/<case>/input.npy      float32 input, N=2, seeded standard normal * 2
    OUTDIR/<case>/expected.npy   float32 output computed by onnxruntime (CPU)
plus OUTDIR/cases.txt (one case name per line) and OUTDIR/malformed/*.onnx with a
sidecar <name>.expect holding a lowercase substring the importer's error should contain.

The batch dimension (axis 0, symbolic "N") is never mixed or reduced by any model.
Everything is seeded, so repeated runs produce identical files.
"""

import os
import sys
import time
import zlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

N = 2  # batch size of the stored inputs
EXT_WEIGHTS = "weights.bin"


# --------------------------------------------------------------------------- builder


class Builder:
    """Tiny graph builder: every case gets its own deterministic RNG."""

    def __init__(self, name, opset, in_shape):
        self.name = name
        self.opset = opset
        self.in_shape = list(in_shape)  # without the batch dim
        self.rng = np.random.default_rng(zlib.crc32(name.encode()))
        self.nodes = []
        self.inits = []
        self._n = 0
        self.x = "input"

    def uid(self, prefix):
        self._n += 1
        return f"{prefix}_{self._n}"

    # ---- constants
    def const(self, arr, dtype=np.float32, name=None):
        """Initializer."""
        name = name or self.uid("c")
        self.inits.append(numpy_helper.from_array(np.asarray(arr, dtype=dtype), name))
        return name

    def i64(self, vals, name=None):
        return self.const(vals, np.int64, name)

    def weight(self, shape, scale=None, name=None):
        if scale is None:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            scale = 1.0 / np.sqrt(fan_in)
        return self.const(self.rng.standard_normal(shape) * scale, name=name)

    def const_node(self, arr, dtype=np.float32):
        """Constant node (as torch exports)."""
        name = self.uid("Constant")
        out = name + "_output_0"
        t = numpy_helper.from_array(np.asarray(arr, dtype=dtype), name + "_value")
        self.nodes.append(helper.make_node("Constant", [], [out], name=name, value=t))
        return out

    # ---- nodes
    def op(self, op_type, inputs, n_out=1, name=None, **attrs):
        name = name or self.uid(op_type)
        outs = [f"{name}_output_{i}" for i in range(n_out)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name, **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(self, x, cin, cout, k=3, stride=1, pads=None, group=1, dilation=None,
             bias=True, auto_pad=None, wscale=None, name=None):
        kh, kw = (k, k) if isinstance(k, int) else k
        w = self.weight([cout, cin // group, kh, kw], wscale)
        ins = [x, w] + ([self.weight([cout], 0.5)] if bias else [])
        return self.op("Conv", ins, name=name, kernel_shape=[kh, kw], strides=[stride, stride],
                       pads=pads, group=group if group != 1 else None,
                       dilations=[dilation, dilation] if dilation else None,
                       auto_pad=auto_pad)

    def bn(self, x, c, eps=1e-3):
        r = self.rng
        scale = self.const(r.uniform(0.5, 1.5, c))
        bias = self.const(r.standard_normal(c) * 0.5)
        mean = self.const(r.standard_normal(c) * 0.5)
        var = self.const(r.uniform(0.5, 2.0, c))
        return self.op("BatchNormalization", [x, scale, bias, mean, var], epsilon=eps)

    def swish(self, x):
        return self.op("Mul", [x, self.op("Sigmoid", [x])])

    def flatten(self, x):
        return self.op("Flatten", [x], axis=1)

    def gemm(self, x, k, m, transB=1, alpha=None, beta=None):
        w = self.weight([m, k] if transB else [k, m])
        b = self.weight([m], 0.5)
        return self.op("Gemm", [x, w, b], transB=transB if transB else None, alpha=alpha, beta=beta)

    def squeeze(self, x, axes):
        if self.opset < 13:
            return self.op("Squeeze", [x], axes=axes)
        return self.op("Squeeze", [x, self.i64(axes)])

    def unsqueeze(self, x, axes):
        if self.opset < 13:
            return self.op("Unsqueeze", [x], axes=axes)
        return self.op("Unsqueeze", [x, self.i64(axes)])

    def batch_flatten_shape(self, x, src=None, gather_idx_node=True):
        """torch `x.view(x.size(0), -1)`: Shape -> Gather(0) -> Unsqueeze -> Concat([.., -1]) -> Reshape."""
        shp = self.op("Shape", [src or x])
        idx = self.const_node(np.int64(0), np.int64) if gather_idx_node else self.i64(np.int64(0))
        n = self.op("Gather", [shp, idx], axis=0)
        n1 = self.unsqueeze(n, [0])
        tgt = self.op("Concat", [n1, self.const_node([-1], np.int64)], axis=0)
        return self.op("Reshape", [x, tgt])

    # ---- model
    def build(self, out):
        for nd in self.nodes:  # rename the graph output to "output"
            nd.output[:] = ["output" if o == out else o for o in nd.output]
            nd.input[:] = ["output" if i == out else i for i in nd.input]
        inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N"] + self.in_shape)
        outp = helper.make_tensor_value_info("output", TensorProto.FLOAT, None)
        graph = helper.make_graph(self.nodes, self.name, [inp], [outp], initializer=self.inits)
        opsets = [helper.make_opsetid("", self.opset)]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="amos-gen_op_models")
        model.ir_version = helper.find_min_ir_version_for(opsets)
        return model

    def make_input(self):
        return (self.rng.standard_normal([N] + self.in_shape) * 2.0).astype(np.float32)


# --------------------------------------------------------------------------- cases

CASES = []  # (name, opset, in_shape, fn(b) -> output name, options)


def case(name, opset, in_shape, **opts):
    def deco(fn):
        CASES.append((name, opset, in_shape, fn, opts))
        return fn
    return deco


# ---- conv
case("conv_3x3_s1_p1", 11, [3, 8, 8])(lambda b: b.conv(b.x, 3, 4, 3, 1, [1, 1, 1, 1]))
case("conv_s2_asym_pads", 13, [3, 8, 8])(lambda b: b.conv(b.x, 3, 4, 3, 2, [0, 0, 1, 1]))
case("conv_dilation2", 14, [3, 11, 10])(lambda b: b.conv(b.x, 3, 4, 3, 1, [2, 2, 2, 2], dilation=2))
case("conv_kernel_5x3", 17, [3, 9, 8])(lambda b: b.conv(b.x, 3, 5, (5, 3), 1, [2, 1, 1, 0]))
case("conv_groups2", 18, [4, 8, 8])(lambda b: b.conv(b.x, 4, 6, 3, 1, [1, 1, 1, 1], group=2))
case("conv_depthwise_s2", 21, [6, 9, 9])(lambda b: b.conv(b.x, 6, 6, 3, 2, [1, 1, 1, 1], group=6))
case("conv_1x1", 13, [5, 6, 7])(lambda b: b.conv(b.x, 5, 3, 1, 1))
case("conv_same_upper_s2", 11, [3, 10, 11])(lambda b: b.conv(b.x, 3, 4, 3, 2, auto_pad="SAME_UPPER"))
case("conv_same_lower_s2", 17, [3, 10, 11])(lambda b: b.conv(b.x, 3, 4, 3, 2, auto_pad="SAME_LOWER"))
case("conv_valid", 14, [3, 9, 10])(lambda b: b.conv(b.x, 3, 4, 3, 2, auto_pad="VALID"))
case("conv_no_bias", 18, [3, 8, 8])(lambda b: b.conv(b.x, 3, 4, 3, 1, [1, 1, 1, 1], bias=False))
case("conv_odd_input", 21, [3, 13, 11])(lambda b: b.conv(b.x, 3, 4, 3, 2, [1, 1, 1, 1]))


@case("conv_constant_weight", 17, [3, 8, 8])
def _(b):
    w = b.const_node(b.rng.standard_normal([4, 3, 3, 3]) / np.sqrt(27))
    bias = b.const_node(b.rng.standard_normal([4]) * 0.5)
    return b.op("Conv", [b.x, w, bias], kernel_shape=[3, 3], pads=[1, 1, 1, 1])


# ---- batchnorm
case("conv_bn", 11, [3, 8, 8])(lambda b: b.bn(b.conv(b.x, 3, 4, 3, 1, [1, 1, 1, 1]), 4))
case("bn_standalone", 15, [3, 6, 5])(lambda b: b.bn(b.x, 3))


# ---- gemm / matmul
case("gemm_flatten_transb", 11, [3, 4, 4])(
    lambda b: b.gemm(b.flatten(b.x), 48, 10, transB=1, alpha=0.7, beta=1.3))
case("gemm_transb0", 13, [2, 3, 5])(lambda b: b.gemm(b.flatten(b.x), 30, 7, transB=0))


@case("matmul_add", 17, [3, 4, 4])
def _(b):
    y = b.op("MatMul", [b.flatten(b.x), b.weight([48, 6])])
    return b.op("Add", [y, b.weight([6], 0.5)])


@case("gemm_shape_reshape_op11", 11, [3, 6, 6])
def _(b):  # x.view(x.size(0), -1) on a conv output, Unsqueeze axes as attribute
    c = b.conv(b.x, 3, 4, 3, 2, [1, 1, 1, 1])
    return b.gemm(b.batch_flatten_shape(c, gather_idx_node=False), 36, 5)


@case("gemm_shape_reshape_op13", 13, [3, 6, 6])
def _(b):  # as efficientnet: Shape taken from the graph input, Reshape applied to the GAP output
    c = b.conv(b.x, 3, 8, 3, 1, [1, 1, 1, 1])
    g = b.op("GlobalAveragePool", [c])
    return b.gemm(b.batch_flatten_shape(g, src=b.x), 8, 5)


@case("gemm_reshape_m1_c", 18, [3, 6, 6])
def _(b):
    g = b.op("GlobalAveragePool", [b.conv(b.x, 3, 8, 3, 1, [1, 1, 1, 1])])
    return b.gemm(b.op("Reshape", [g, b.i64([-1, 8])]), 8, 5)


# ---- elementwise binary
OPSET_CYCLE = [11, 13, 14, 17, 18, 21]


def _positive(b, x):
    """Sigmoid(x) + 0.5, in (0.5, 1.5): a well-conditioned divisor."""
    return b.op("Add", [b.op("Sigmoid", [x]), b.const(np.float32(0.5))])


def _branches(op):
    def fn(b):
        c1 = b.conv(b.x, 3, 4, 3, 1, [1, 1, 1, 1])
        c2 = b.conv(b.x, 3, 4, 1, 1)
        return b.op(op, [c1, _positive(b, c2) if op == "Div" else c2])
    return fn


def _chan_const(op):
    def fn(b):
        v = b.rng.standard_normal([4, 1, 1])
        if op == "Div":
            v = np.sign(v) * (0.5 + np.abs(v))
        return b.op(op, [b.x, b.const(v)])
    return fn


def _scalar_const(op):
    def fn(b):
        return b.op(op, [b.x, b.const(np.float32({"Add": 0.75, "Sub": 1.25, "Mul": -1.5, "Div": 2.5}[op]))])
    return fn


def _const_left(op):
    def fn(b):
        if op == "Div":  # scalar / positive tensor
            return b.op(op, [b.const(np.float32(3.0)), _positive(b, b.x)])
        if op == "Mul":
            return b.op(op, [b.const(np.float32(0.5)), b.x])
        return b.op(op, [b.const(b.rng.standard_normal([4, 1, 1])), b.x])
    return fn


_i = 0
for _op in ["Add", "Sub", "Mul", "Div"]:
    for _form, _mk, _shape in [("branches", _branches, [3, 6, 6]), ("chan_const", _chan_const, [4, 5, 6]),
                               ("scalar_const", _scalar_const, [4, 5, 6]), ("const_left", _const_left, [4, 5, 6])]:
        case(f"{_op.lower()}_{_form}", OPSET_CYCLE[_i % len(OPSET_CYCLE)], _shape)(_mk(_op))
        _i += 1

case("add_full_const", 13, [3, 4, 5])(lambda b: b.op("Add", [b.x, b.weight([3, 4, 5], 1.0)]))


def _se(swap):
    def fn(b):
        f = b.conv(b.x, 3, 6, 3, 1, [1, 1, 1, 1])
        g = b.op("GlobalAveragePool", [f])
        s = b.op("Sigmoid", [b.conv(g, 6, 6, 1, 1)])  # [N,6,1,1]
        return b.op("Mul", [s, f] if swap else [f, s])
    return fn


case("se_mul", 14, [3, 7, 7])(_se(False))
case("se_mul_swapped", 18, [3, 7, 7])(_se(True))


# ---- activations
case("relu", 11, [3, 5, 6])(lambda b: b.op("Relu", [b.x]))


def _big_conv(b):  # conv with wide output range so Clip/HardSwish saturate on both sides
    return b.conv(b.x, 3, 4, 3, 1, [1, 1, 1, 1], wscale=0.6)


case("clip6_init", 11, [3, 8, 8])(lambda b: b.op(
    "Clip", [_big_conv(b), b.const(np.float32(0)), b.const(np.float32(6))]))
case("clip6_const_nodes", 13, [3, 8, 8])(lambda b: b.op(
    "Clip", [_big_conv(b), b.const_node(np.float32(0)), b.const_node(np.float32(6))]))
case("clip_min_only", 18, [3, 5, 6])(lambda b: b.op("Clip", [b.x, b.const(np.float32(0))]))
case("sigmoid", 13, [3, 5, 6])(lambda b: b.op("Sigmoid", [b.x]))
case("swish_x_sig", 14, [3, 5, 6])(lambda b: b.op("Mul", [b.x, b.op("Sigmoid", [b.x])]))
case("swish_sig_x", 17, [3, 5, 6])(lambda b: b.op("Mul", [b.op("Sigmoid", [b.x]), b.x]))
case("hardsigmoid_default", 11, [3, 5, 6])(lambda b: b.op("HardSigmoid", [b.x]))
case("hardsigmoid_custom", 18, [3, 5, 6])(lambda b: b.op("HardSigmoid", [b.x], alpha=0.3, beta=0.4))
case("hardswish_op", 14, [3, 8, 8])(lambda b: b.op("HardSwish", [_big_conv(b)]))
case("hardswish_op21", 21, [3, 5, 6])(lambda b: b.op("HardSwish", [b.x]))
case("hardswish_decomposed", 17, [3, 8, 8])(lambda b: (lambda c: b.op(
    "Mul", [c, b.op("HardSigmoid", [c], alpha=1.0 / 6.0, beta=0.5)]))(_big_conv(b)))
case("tanh", 18, [3, 5, 6])(lambda b: b.op("Tanh", [b.x]))


@case("gelu_erf", 13, [3, 5, 6])
def _(b):  # torch: Div(x, sqrt2) -> Erf -> Add 1 -> Mul x -> Mul 0.5
    e = b.op("Erf", [b.op("Div", [b.x, b.const_node(np.float32(1.4142135))])])
    e1 = b.op("Add", [e, b.const_node(np.float32(1.0))])
    return b.op("Mul", [b.op("Mul", [b.x, e1]), b.const_node(np.float32(0.5))])


@case("gelu_erf_half_first", 17, [3, 5, 6])
def _(b):  # Mul(x, 0.5) first, then times (1 + erf(x/sqrt2)), initializer constants
    h = b.op("Mul", [b.x, b.const(np.float32(0.5))])
    e = b.op("Erf", [b.op("Div", [b.x, b.const(np.float32(1.4142135))])])
    return b.op("Mul", [h, b.op("Add", [e, b.const(np.float32(1.0))])])


# ---- pooling
case("gap", 11, [4, 5, 7])(lambda b: b.op("GlobalAveragePool", [b.x]))
case("reducemean_attr_keepdims", 13, [4, 5, 7])(
    lambda b: b.op("ReduceMean", [b.x], axes=[2, 3], keepdims=1))
case("reducemean_input_nokeep", 18, [4, 5, 7])(
    lambda b: b.op("ReduceMean", [b.x, b.i64([2, 3])], keepdims=0))
case("avgpool_s2_p1_cip0", 11, [3, 9, 10])(lambda b: b.op(
    "AveragePool", [b.x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=0))
case("avgpool_s2_p1_cip1", 19, [3, 9, 10])(lambda b: b.op(
    "AveragePool", [b.x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1))
case("avgpool_ceil", 13, [3, 10, 9])(lambda b: b.op(
    "AveragePool", [b.x], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1))
case("maxpool_s2_p1", 17, [3, 9, 10])(lambda b: b.op(
    "MaxPool", [b.x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
case("maxpool_2x2_ceil_odd", 21, [3, 9, 11])(lambda b: b.op(
    "MaxPool", [b.x], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1))


# ---- shape ops
case("flatten", 11, [3, 4, 5])(lambda b: b.flatten(b.x))
case("reshape_0_m1", 13, [3, 4, 5])(lambda b: b.op("Reshape", [b.x, b.i64([0, -1])]))
case("reshape_m1_chw", 14, [3, 4, 5])(lambda b: b.op("Reshape", [b.x, b.i64([-1, 60])]))


@case("squeeze_unsqueeze_op11", 11, [4, 5, 5])
def _(b):
    s = b.squeeze(b.op("GlobalAveragePool", [b.x]), [2, 3])
    return b.conv(b.unsqueeze(s, [2, 3]), 4, 3, 1)


@case("squeeze_unsqueeze_op18", 18, [4, 5, 5])
def _(b):
    s = b.squeeze(b.op("GlobalAveragePool", [b.x]), [2, 3])
    return b.conv(b.unsqueeze(s, [2, 3]), 4, 3, 1)


case("squeeze_gemm_op13", 13, [4, 5, 5])(
    lambda b: b.gemm(b.squeeze(b.op("GlobalAveragePool", [b.x]), [2, 3]), 4, 6))


@case("concat_branches", 14, [3, 6, 6])
def _(b):
    c1 = b.conv(b.x, 3, 4, 3, 1, [1, 1, 1, 1])
    c2 = b.conv(b.x, 3, 2, 1, 1)
    return b.conv(b.op("Concat", [c1, c2], axis=1), 6, 3, 1)


@case("pad_conv_same", 11, [3, 9, 9])
def _(b):  # "same" padding as a separate Pad (constant_value input omitted)
    p = b.op("Pad", [b.x, b.i64([0, 0, 0, 0, 0, 0, 1, 1])], mode="constant")
    return b.conv(p, 3, 4, 3, 2, [0, 0, 0, 0])


@case("pad_conv_same_const_nodes", 18, [3, 10, 10])
def _(b):
    p = b.op("Pad", [b.x, b.const_node([0, 0, 1, 0, 0, 0, 2, 1], np.int64), b.const_node(np.float32(0))],
             mode="constant")
    return b.conv(p, 3, 4, 3, 2, [0, 0, 0, 0])


case("pad_nonzero_avgpool", 13, [3, 6, 7])(lambda b: b.op(
    "AveragePool", [b.op("Pad", [b.x, b.i64([0, 0, 1, 0, 0, 0, 2, 1]), b.const(np.float32(1.5))])],
    kernel_shape=[2, 2], strides=[1, 1]))
case("pad_nonzero_output", 21, [3, 4, 5])(lambda b: b.op(
    "Pad", [b.x, b.i64([0, 0, 2, 1, 0, 0, 0, 3]), b.const(np.float32(-0.5))], mode="constant"))
case("identity", 13, [3, 5, 6])(lambda b: b.op("Relu", [b.op("Identity", [b.x])]))
case("dropout", 12, [3, 6, 6])(lambda b: b.op("Relu", [b.op("Dropout", [b.conv(b.x, 3, 4, 3, 1, [1, 1, 1, 1])])]))


def _effnet_pad(b, x, torch_pad):
    """Pad whose pads come from the exact efficientnet_lite0 (torch F.pad) export pattern:
    Constant(torch pads) + ConstantOfShape(zeros) -> Concat -> Reshape[-1,2] -> Slice(step -1)
    -> Transpose[1,0] -> Reshape[-1] -> Cast(int64) -> Pad(constant 0)."""
    c = b.const_node(np.array([4], np.int64), np.int64)
    c1 = b.const_node(np.array(torch_pad, np.int64), np.int64)
    zeros = b.op("ConstantOfShape", [c], value=numpy_helper.from_array(np.array([0], np.int64)))
    cat = b.op("Concat", [c1, zeros], axis=0)
    r = b.op("Reshape", [cat, b.const_node(np.array([-1, 2], np.int64), np.int64)])
    st = b.const_node(np.array([0], np.int64), np.int64)
    starts = b.const_node(np.array([-1], np.int64), np.int64)
    ends = b.const_node(np.array([-9223372036854775807], np.int64), np.int64)
    steps = b.const_node(np.array([-1], np.int64), np.int64)
    s = b.op("Slice", [r, starts, ends, st, steps])
    t = b.op("Transpose", [s], perm=[1, 0])
    r1 = b.op("Reshape", [t, b.const_node(np.array([-1], np.int64), np.int64)])
    pads = b.op("Cast", [r1], to=TensorProto.INT64)
    return b.op("Pad", [x, pads, b.const_node(np.float32(0))], mode="constant")


case("pad_effnet_pattern", 13, [3, 10, 10])(
    lambda b: b.conv(_effnet_pad(b, b.x, [0, 1, 0, 1]), 3, 4, 3, 2, [0, 0, 0, 0]))
case("pad_effnet_pattern_asym", 17, [3, 9, 10])(
    lambda b: b.conv(_effnet_pad(b, b.x, [1, 2, 0, 1]), 3, 4, 3, 2, [0, 0, 0, 0]))


# ---- softmax
case("softmax_axis1", 11, [3, 4, 4])(lambda b: b.op("Softmax", [b.gemm(b.flatten(b.x), 48, 10)], axis=1))
case("softmax_axis_m1", 13, [3, 4, 4])(lambda b: b.op("Softmax", [b.gemm(b.flatten(b.x), 48, 10)], axis=-1))


# ---- tiny MBConv network
@case("mbconv", 13, [3, 16, 16])
def _(b):
    stem = b.swish(b.bn(b.conv(b.x, 3, 8, 3, 2, [1, 1, 1, 1], bias=False), 8))
    dw = b.swish(b.bn(b.conv(stem, 8, 8, 3, 1, [1, 1, 1, 1], group=8, bias=False), 8))
    se = b.op("GlobalAveragePool", [dw])
    se = b.swish(b.conv(se, 8, 2, 1, 1))
    se = b.op("Sigmoid", [b.conv(se, 2, 8, 1, 1)])
    x = b.op("Mul", [dw, se])
    proj = b.bn(b.conv(x, 8, 8, 1, 1, bias=False), 8)
    res = b.op("Add", [proj, stem])
    head = b.swish(b.bn(b.conv(res, 8, 16, 1, 1, bias=False), 16))
    g = b.flatten(b.op("GlobalAveragePool", [head]))
    return b.op("Softmax", [b.gemm(g, 16, 10)], axis=1)


# ---- external data
case("external_data_conv", 14, [3, 8, 8], external=True)(
    lambda b: b.op("Relu", [b.conv(b.x, 3, 4, 3, 1, [1, 1, 1, 1])]))


# --------------------------------------------------------------------------- malformed


def _raw_model(nodes, inits, opset, in_shape=(3, 8, 8)):
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *in_shape])
    outp = helper.make_tensor_value_info("output", TensorProto.FLOAT, None)
    g = helper.make_graph(nodes, "malformed", [inp], [outp], initializer=inits)
    opsets = [helper.make_opsetid("", opset)]
    m = helper.make_model(g, opset_imports=opsets, producer_name="amos-gen_op_models")
    m.ir_version = helper.find_min_ir_version_for(opsets)
    return m


def write_malformed(outdir):
    d = os.path.join(outdir, "malformed")
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(1234)

    def w(shape, name):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name)

    items = {}
    items["unknown_op"] = (_raw_model(
        [helper.make_node("Relu", ["input"], ["r"], name="relu0"),
         helper.make_node("FancyOp", ["r"], ["output"], name="fancy_node")], [], 13), "fancyop")
    items["missing_initializer"] = (_raw_model(
        [helper.make_node("Conv", ["input", "w_missing"], ["output"], name="conv_missing",
                          kernel_shape=[3, 3], pads=[1, 1, 1, 1])], [], 13), "w_missing")
    items["wrong_shapes"] = (_raw_model(
        [helper.make_node("Conv", ["input", "w_bad", "b_bad"], ["output"], name="conv_bad",
                          kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
        [w([4, 5, 3, 3], "w_bad"), w([4], "b_bad")], 13), "conv_bad")
    items["bad_attribute"] = (_raw_model(
        [helper.make_node("Conv", ["input", "w"], ["output"], name="conv_pad",
                          kernel_shape=[3, 3], auto_pad="BOGUS")],
        [w([4, 3, 3, 3], "w")], 13), "conv_pad")
    items["unsupported_opset"] = (_raw_model(
        [helper.make_node("Conv", ["input", "w"], ["c"], name="conv0", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["output"], name="relu0")],
        [w([4, 3, 3, 3], "w")], 7), "opset")
    for name, (m, expect) in items.items():
        onnx.save_model(m, os.path.join(d, name + ".onnx"))
        with open(os.path.join(d, name + ".expect"), "w") as f:
            f.write(expect + "\n")

    # 200 random bytes; first byte 0x07 = field number 0 / wire type 7, invalid for every protobuf decoder
    junk = bytearray(rng.integers(0, 256, 200, dtype=np.uint8).tobytes())
    junk[0] = 0x07
    with open(os.path.join(d, "not_onnx.onnx"), "wb") as f:
        f.write(bytes(junk))
    with open(os.path.join(d, "not_onnx.expect"), "w") as f:
        f.write("onnx\n")
    return len(items) + 1


# --------------------------------------------------------------------------- driver


def _session(model_or_path):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    src = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def _check_no_batch_mixing(name, x, model):
    """Each batch item run alone must give the same result as in the batch."""
    full = _session(model).run(None, {"input": x})[0]
    one = _session(model).run(None, {"input": x[:1]})[0]
    if not np.allclose(full[:1], one, rtol=1e-5, atol=1e-5):
        raise AssertionError(f"{name}: output depends on other batch items")


def generate_case(outdir, name, opset, in_shape, fn, opts):
    b = Builder(name, opset, in_shape)
    out = fn(b)
    model = b.build(out)
    x = b.make_input()
    y = _session(model).run(None, {"input": x})[0].astype(np.float32)
    assert y.shape[0] == N and np.all(np.isfinite(y)), name
    # now that the output shape is known, declare it (first dim symbolic)
    shp = model.graph.output[0].type.tensor_type.shape
    shp.dim.add().dim_param = "N"
    for v in y.shape[1:]:
        shp.dim.add().dim_value = int(v)
    onnx.checker.check_model(model, full_check=True)
    _check_no_batch_mixing(name, x, model)

    d = os.path.join(outdir, name)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "model.onnx")
    if opts.get("external"):
        wpath = os.path.join(d, EXT_WEIGHTS)
        if os.path.exists(wpath):
            os.remove(wpath)  # save_model appends to an existing data file
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=EXT_WEIGHTS, size_threshold=0)
        os.chmod(wpath, 0o644)  # onnx creates the data file 0600
        onnx.checker.check_model(path, full_check=True)
        y2 = _session(path).run(None, {"input": x})[0]
        assert np.array_equal(y, y2), name
    else:
        onnx.save_model(model, path)
    np.save(os.path.join(d, "input.npy"), x)
    np.save(os.path.join(d, "expected.npy"), y)


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    outdir = argv[1]
    t0 = time.time()
    os.makedirs(outdir, exist_ok=True)
    names = [c[0] for c in CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    for name, opset, in_shape, fn, opts in CASES:
        try:
            generate_case(outdir, name, opset, in_shape, fn, opts)
        except Exception as e:
            raise SystemExit(f"gen_op_models: case {name} failed: {e}")
    with open(os.path.join(outdir, "cases.txt"), "w") as f:
        f.write("\n".join(names) + "\n")
    n_bad = write_malformed(outdir)
    opsets = sorted({c[1] for c in CASES})
    print(f"gen_op_models: {len(CASES)} cases + {n_bad} malformed -> {outdir} "
          f"(opsets {','.join(map(str, opsets))}; onnx {onnx.__version__}, onnxruntime {ort.__version__}) "
          f"in {time.time() - t0:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
