"""Build the MiniFASNet (V2 / V1SE) ONNX graph from its weight arrays.

The layer list is read off the tensor names (see ../shared/models/MODELS.md),
so one builder serves both variants. Every BatchNorm directly follows a bias-free
convolution or linear layer, so each is folded into that layer's weights and a
bias: y = gamma * (Wx - mean) / sqrt(var + eps) + beta = (W * s) x + (beta - mean * s).
That is exact algebra; the float32 result differs from the unfolded network by
rounding only (well inside the 1e-4 the test vectors demand). Dropout is the
identity at inference and is left out.

Graph: input `input` [batch, 3, 80, 80] float32, BGR, raw 0..255;
output `softmax` [batch, 3] (class 1 = real face).
The serialization is deterministic so the pinned SHA-256 can be reproduced.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from liveness.weights import load_state_dict

BN_EPS = 1e-5
INPUT_NAME = "input"
OUTPUT_NAME = "softmax"
PATCH_SIZE = 80
_OPSET = 17
_IR_VERSION = 8  # fixed, so the bytes do not drift with the onnx package's default


class _GraphBuilder:
    def __init__(self, state: dict[str, np.ndarray]):
        self._state = state
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def _const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name))
        return name

    def _bn_scale_shift(self, prefix: str) -> tuple[np.ndarray, np.ndarray]:
        s = self._state
        # float64 while folding so the fold adds no rounding of its own beyond the final cast
        scale = s[f"{prefix}.weight"].astype(np.float64) / np.sqrt(s[f"{prefix}.running_var"].astype(np.float64) + BN_EPS)
        shift = s[f"{prefix}.bias"].astype(np.float64) - s[f"{prefix}.running_mean"].astype(np.float64) * scale
        return scale, shift

    def conv_bn(self, x: str, conv: str, bn: str, out: str, *, stride: int = 1, pad: int = 0) -> str:
        weight = self._state[f"{conv}.weight"].astype(np.float64)
        scale, shift = self._bn_scale_shift(bn)
        groups = weight.shape[0] if weight.shape[1] == 1 and weight.shape[0] > 1 and weight.shape[2] > 1 else 1
        w = self._const(f"{conv}.weight_folded", weight * scale[:, None, None, None])
        b = self._const(f"{conv}.bias_folded", shift)
        k = weight.shape[2]
        self.nodes.append(
            helper.make_node(
                "Conv", [x, w, b], [out], name=conv,
                kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, group=groups,
            )
        )
        return out

    def prelu(self, x: str, prefix: str) -> str:
        slope = self._const(f"{prefix}.prelu.slope", self._state[f"{prefix}.prelu.weight"][:, None, None])
        out = f"{prefix}.out"
        self.nodes.append(helper.make_node("PRelu", [x, slope], [out], name=f"{prefix}.prelu"))
        return out

    def conv_block(self, x: str, prefix: str, *, stride: int = 1, pad: int = 0) -> str:
        """conv (no bias) + BatchNorm + PReLU"""
        y = self.conv_bn(x, f"{prefix}.conv", f"{prefix}.bn", f"{prefix}.bn_out", stride=stride, pad=pad)
        return self.prelu(y, prefix)

    def linear_block(self, x: str, prefix: str, *, stride: int = 1, pad: int = 0) -> str:
        """conv (no bias) + BatchNorm, no activation"""
        return self.conv_bn(x, f"{prefix}.conv", f"{prefix}.bn", f"{prefix}.out", stride=stride, pad=pad)

    def se_module(self, x: str, prefix: str) -> str:
        pooled = f"{prefix}.pool"
        self.nodes.append(helper.make_node("GlobalAveragePool", [x], [pooled], name=pooled))
        h = self.conv_bn(pooled, f"{prefix}.fc1", f"{prefix}.bn1", f"{prefix}.fc1_out")
        self.nodes.append(helper.make_node("Relu", [h], [f"{prefix}.relu"], name=f"{prefix}.relu"))
        g = self.conv_bn(f"{prefix}.relu", f"{prefix}.fc2", f"{prefix}.bn2", f"{prefix}.fc2_out")
        self.nodes.append(helper.make_node("Sigmoid", [g], [f"{prefix}.gate"], name=f"{prefix}.sigmoid"))
        self.nodes.append(helper.make_node("Mul", [x, f"{prefix}.gate"], [f"{prefix}.out"], name=f"{prefix}.mul"))
        return f"{prefix}.out"

    def depthwise_unit(self, x: str, prefix: str, *, stride: int, residual: bool) -> str:
        y = self.conv_block(x, f"{prefix}.conv")
        y = self.conv_block(y, f"{prefix}.conv_dw", stride=stride, pad=1)
        y = self.linear_block(y, f"{prefix}.project")
        if not residual:
            return y
        if f"{prefix}.se_module.fc1.weight" in self._state:
            y = self.se_module(y, f"{prefix}.se_module")
        out = f"{prefix}.sum"
        self.nodes.append(helper.make_node("Add", [x, y], [out], name=out))
        return out

    def residual_stack(self, x: str, prefix: str) -> str:
        units = sorted(
            {int(m.group(1)) for key in self._state if (m := re.match(rf"{re.escape(prefix)}\.model\.(\d+)\.", key))}
        )
        if units != list(range(len(units))) or not units:
            raise ValueError(f"{prefix}: residual units {units} are not 0..n-1")
        for i in units:
            x = self.depthwise_unit(x, f"{prefix}.model.{i}", stride=1, residual=True)
        return x

    def head(self, x: str) -> str:
        s = self._state
        self.nodes.append(helper.make_node("Flatten", [x], ["flat"], name="flatten", axis=1))
        scale, shift = self._bn_scale_shift("bn")
        w = self._const("linear.weight_folded", s["linear.weight"].astype(np.float64) * scale[:, None])
        b = self._const("linear.bias_folded", shift)
        self.nodes.append(helper.make_node("Gemm", ["flat", w, b], ["embedding"], name="linear", transB=1))
        prob = self._const("prob.weight", s["prob.weight"])
        self.nodes.append(helper.make_node("Gemm", ["embedding", prob], ["logits"], name="prob", transB=1))
        self.nodes.append(helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], name="softmax", axis=1))
        return OUTPUT_NAME


def has_squeeze_excitation(state: dict[str, np.ndarray]) -> bool:
    return any(".se_module." in key for key in state)


def build_model(state: dict[str, np.ndarray], graph_name: str) -> onnx.ModelProto:
    b = _GraphBuilder(state)
    x = b.conv_block(INPUT_NAME, "conv1", stride=2, pad=1)
    x = b.conv_block(x, "conv2_dw", stride=1, pad=1)
    x = b.depthwise_unit(x, "conv_23", stride=2, residual=False)
    x = b.residual_stack(x, "conv_3")
    x = b.depthwise_unit(x, "conv_34", stride=2, residual=False)
    x = b.residual_stack(x, "conv_4")
    x = b.depthwise_unit(x, "conv_45", stride=2, residual=False)
    x = b.residual_stack(x, "conv_5")
    x = b.conv_block(x, "conv_6_sep")
    x = b.linear_block(x, "conv_6_dw")  # 5x5 global depthwise, no padding
    out = b.head(x)

    graph = helper.make_graph(
        b.nodes,
        graph_name,
        inputs=[helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, PATCH_SIZE, PATCH_SIZE])],
        outputs=[helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", 3])],
        initializer=b.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)], producer_name="idv-liveness")
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def _converter(expect_se: bool, graph_name: str):  # noqa: ANN202
    def convert(source: Path, target: Path) -> None:
        state = load_state_dict(source)
        if has_squeeze_excitation(state) != expect_se:
            raise ValueError(f"{source.name}: expected a {graph_name} state_dict, got the other MiniFASNet variant")
        model = build_model(state, graph_name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(model.SerializeToString(deterministic=True))

    convert.__name__ = f"convert_{graph_name}"
    convert.__doc__ = f"Write the {graph_name} ONNX graph built from `source` (.npz or legacy .pth) to `target`."
    return convert


convert_minifasnet_v2 = _converter(expect_se=False, graph_name="minifasnet_v2")
convert_minifasnet_v1se = _converter(expect_se=True, graph_name="minifasnet_v1se")
