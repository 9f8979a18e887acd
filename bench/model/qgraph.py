"""The int8 graph as plain data: tensors with their quantisation and constants, operators in execution order.

Why here, below everything: a .tflite file (`bench.tflite`), the int8 references (`bench.numerics`) and the plan
compiler (`bench.plan`) all speak of the same graph; the type must not depend on any of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Activation = Literal["NONE", "RELU", "RELU6"]
Padding = Literal["SAME", "VALID"]


@dataclass(frozen=True, eq=False)
class QTensor:
    """A tensor: ``scale``/``zero_point`` have one entry (per tensor) or one per channel of ``quantized_dimension``.

    ``data`` holds the contents of constant tensors (weights, biases, shapes, axes), None for activations.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: np.ndarray | None = None  # float32
    zero_point: np.ndarray | None = None  # int64
    quantized_dimension: int = 0
    data: np.ndarray | None = None

    @property
    def per_channel(self) -> bool:
        return self.scale is not None and len(self.scale) > 1

    @property
    def is_constant(self) -> bool:
        return self.data is not None


@dataclass(frozen=True)
class ConvOptions:
    """CONV_2D and DEPTHWISE_CONV_2D (``depth_multiplier`` is 1 for CONV_2D); stride and dilation are (h, w).

    Only dilation (1, 1) is supported: `validate` refuses others, so an imported model never has them.
    """

    padding: Padding
    stride: tuple[int, int]
    activation: Activation = "NONE"
    depth_multiplier: int = 1
    dilation: tuple[int, int] = (1, 1)


@dataclass(frozen=True)
class PoolOptions:
    padding: Padding
    stride: tuple[int, int]
    filter: tuple[int, int]
    activation: Activation = "NONE"


@dataclass(frozen=True)
class FullyConnectedOptions:
    activation: Activation = "NONE"
    keep_num_dims: bool = False


@dataclass(frozen=True)
class MeanOptions:
    keep_dims: bool = False


@dataclass(frozen=True)
class AddOptions:
    activation: Activation = "NONE"


@dataclass(frozen=True)
class ReshapeOptions:
    new_shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class SoftmaxOptions:
    beta: float = 1.0


@dataclass(frozen=True)
class NoOptions:
    pass


Options = (
    ConvOptions | PoolOptions | FullyConnectedOptions | MeanOptions | AddOptions | ReshapeOptions | SoftmaxOptions
    | NoOptions
)


@dataclass(frozen=True)
class QOp:
    """One operator; ``inputs`` may contain -1 for an absent optional input (e.g. no bias)."""

    kind: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: Options


@dataclass(frozen=True, eq=False)
class QModel:
    """A single-subgraph int8 graph; ``ops`` are in execution order."""

    name: str
    tensors: tuple[QTensor, ...]
    ops: tuple[QOp, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    def kinds(self) -> list[str]:
        return [op.kind for op in self.ops]


def _arrays_differ(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return (a is None) != (b is None)
    return a.dtype != b.dtype or a.shape != b.shape or not np.array_equal(a, b)


def _tensor_diff(i: int, a: QTensor, b: QTensor) -> list[str]:
    fields = ("name", "shape", "dtype", "quantized_dimension")
    out = [f"tensor {i}: {f} {getattr(a, f)!r} != {getattr(b, f)!r}" for f in fields if getattr(a, f) != getattr(b, f)]
    arrays = ("scale", "zero_point", "data")
    return out + [f"tensor {i}: {f} differs" for f in arrays if _arrays_differ(getattr(a, f), getattr(b, f))]


def diff_models(a: QModel, b: QModel) -> list[str]:
    """Structural differences (empty when equal): what a round trip must preserve."""
    fields = ("name", "inputs", "outputs")
    out = [f"{f}: {getattr(a, f)!r} != {getattr(b, f)!r}" for f in fields if getattr(a, f) != getattr(b, f)]
    if len(a.tensors) != len(b.tensors) or len(a.ops) != len(b.ops):
        return [*out, f"sizes differ: {len(a.tensors)}/{len(a.ops)} vs {len(b.tensors)}/{len(b.ops)} tensors/ops"]
    for i, (ta, tb) in enumerate(zip(a.tensors, b.tensors, strict=True)):
        out += _tensor_diff(i, ta, tb)
    out += [f"operator {i}: {oa} != {ob}" for i, (oa, ob) in enumerate(zip(a.ops, b.ops, strict=True)) if oa != ob]
    return out
