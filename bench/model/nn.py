"""Network descriptions shared by the host stages (model building, planning, reference checks).

A model is plain data: a sequence of layers with float32 weights in TFLite layouts (activations HWC, conv weights
OHWI, dense weights [out][in]). The firmware never sees this type; the plan stage serialises it into a plan blob.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Op = Literal["dense", "conv2d", "relu", "maxpool2d", "dwconv2d", "gap", "add"]
Act = Literal["none", "relu", "relu6"]
Shape = tuple[int, int, int]  # (h, w, c)


@dataclass(frozen=True)
class Layer:
    """One layer; ``weight``/``bias`` are None for parameter-free ops (relu, maxpool2d: ``kernel`` × ``kernel``
    windows at ``stride``, valid padding; gap: the global average pool to 1×1×c).

    Imported graphs (`bench.tflite.fp32`) add what their ops carry: a kernel ``kernel`` high and ``kernel_w`` wide
    (0: square), depthwise convs (``dwconv2d``, depth multiplier 1, weights channel-major [c][k][kw]) and a fused
    activation ``act`` applied to the layer's output (one plan record per TFLite op keeps MobileNets within the
    device's 32 layers).

    A residual ``add`` sums its input (the branch, the previous layer's output) with the activation at position
    ``skip`` (the input of layer ``skip``, where the branch starts; 0 = the model's input), then applies ``act``;
    its gradient goes to both."""

    op: Op
    in_shape: Shape
    out_shape: Shape
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    kernel: int = 0
    stride: int = 1
    padding: Literal["valid", "same"] = "valid"
    kernel_w: int = 0
    act: Act = "none"
    skip: int = -1

    @property
    def kw(self) -> int:
        """The kernel's width (its height is ``kernel``)."""
        return self.kernel_w or self.kernel

    @property
    def has_params(self) -> bool:
        return self.weight is not None


@dataclass(frozen=True)
class Model:
    """A feed-forward classifier ending in logits (softmax cross-entropy), or (``loss`` "reconstruction") an
    autoencoder whose output is compared with its own input by mean squared error; ``n_classes`` is then its output
    size, equal to the input's."""

    name: str
    input_shape: Shape
    n_classes: int
    layers: tuple[Layer, ...]
    meta: dict[str, str] = field(default_factory=dict)
    loss: Literal["cross-entropy", "reconstruction"] = "cross-entropy"

    def param_layers(self) -> list[int]:
        return [i for i, layer in enumerate(self.layers) if layer.has_params]

    def n_params(self) -> int:
        return sum(
            int(layer.weight.size) + int(layer.bias.size)
            for layer in self.layers
            if layer.weight is not None and layer.bias is not None
        )


def numel(shape: Shape) -> int:
    return shape[0] * shape[1] * shape[2]


def conv_out_size(size: int, kernel: int, stride: int, padding: str) -> int:
    """Output length of one spatial axis, TFLite rules."""
    if padding == "same":
        return (size + stride - 1) // stride
    return (size - kernel) // stride + 1


def same_padding(size: int, kernel: int, stride: int) -> int:
    """Leading padding for SAME (TFLite: the extra pixel goes to the end)."""
    out = conv_out_size(size, kernel, stride, "same")
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2
