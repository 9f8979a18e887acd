"""Profiles: experiment definitions (TOML) naming a task, a model, techniques and training settings.

First stage of the data path (profile → plan → image → target → link → records → report). A technique is
``<scheme>-<numerics>``; which ones this version can run is listed in ``TECHNIQUES``.

Numerics: ``fp32`` (float SGD), ``int8`` (int8 forward, integer backward, SGD on the int8 codes with
Quantization-Aware Scaling, MCUNetV3), ``int8-noqas`` (the same without QAS: the ablation).

Schemes: ``full`` (every parameter), ``last`` (weights and biases of the last ``last_k`` layers with parameters),
``bias`` (biases of the last ``last_k`` layers with parameters, TinyTL), ``sparse`` (MCUNetV3 sparse update: biases of
the last ``bias_k`` layers with parameters plus the weights of chosen layers, each on a fraction of its output
channels picked by weight magnitude), configured by a ``[sparse]`` table::

    techniques = ["sparse-fp32"]
    [sparse]
    bias_k = 2                         # biases of the last 2 layers with parameters (0: none)
    layers = { 0 = 0.25, 4 = 1.0 }     # layer index -> ratio of its output channels whose weights train

Models: a name from ``bench/model/zoo.py`` (pretrained on the host), or an imported int8 ``.tflite`` file
(``model = "../shared/models/person_detect.tflite"``, relative to the repository root). An imported model runs the
int8 techniques as it is (no fp32 twin of it exists); its fp32 techniques are planned by ``bench/plan/fp32mem.py`` and
recorded as ``does-not-fit`` when the plan exceeds the board's SRAM. ``head_classes = N`` replaces an imported
model's classifier (the last CONV_2D 1×1 / FULLY_CONNECTED before RESHAPE/SOFTMAX) with a fresh N-class int8 head
(``bench/tflite/head.py``); N must be the task's class count. For an imported model, ``[sparse]`` and the
``last``/``bias``
schemes count *operator indices of the .tflite graph* (its order in the file), not fp32 layer indices: ``layers``
names CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED ops, and ``bias_k`` counts the ops with a bias (the same kinds)
from the end; ``bench.tflite.io.load_tflite(path).ops`` lists them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bench.config.boards import REPO_ROOT, ConfigError, read_toml, validate_file

PROFILES_DIR = REPO_ROOT / "profiles"

SCHEMES = ("full", "last", "bias", "sparse")
# fp32: float SGD (TPLN plans); int8: int8 forward and integer backward with Quantization-Aware Scaling (TQPL plans
# with a training section); int8-noqas: the same without the s_W^-2 / (s_W·s_x)^-2 scaling, the ablation
NUMERICS = ("fp32", "int8", "int8-noqas")
# forward-only training (PEPITA; MEMPEPITA recomputes activations instead of keeping them): fp32 only
FORWARD_ONLY = ("pepita", "mempepita")
TECHNIQUES = (*(f"{s}-{n}" for n in NUMERICS for s in SCHEMES), *(f"{s}-fp32" for s in FORWARD_ONLY))


RATIOS = (0.125, 0.25, 0.5, 1.0)  # sparse update: fractions of a layer's output channels (MCUNetV3)


class TechniqueError(ValueError):
    """An unknown or not yet runnable technique name."""


class ModelNotFound(ConfigError):
    """An imported model file named by a profile does not exist."""


def model_path(model: str) -> Path | None:
    """The file of an imported model (a name ending in ``.tflite``, relative to the repository root), else None."""
    if not model.endswith(".tflite"):
        return None
    path = Path(model)
    return path if path.is_absolute() else (REPO_ROOT / path).resolve()


def require_model_file(model: str) -> Path:
    """The existing file of imported model ``model``; a `ModelNotFound` naming the path otherwise."""
    path = model_path(model)
    assert path is not None, model
    if not path.is_file():
        raise ModelNotFound(f"model file {path} not found (profile key 'model' = {model!r}, relative to {REPO_ROOT}); "
                            f"third-party models live in ../shared/models beside the project's own clone, which "
                            f"other clones do not have")
    return path


class SparseSpec(BaseModel):
    """The ``[sparse]`` table: which biases and which weight channels the ``sparse`` scheme updates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bias_k: int = Field(default=1, ge=0, le=32)
    layers: dict[int, float] = Field(default_factory=dict)

    @field_validator("layers", mode="after")
    @classmethod
    def _ratios(cls, layers: dict[int, float]) -> dict[int, float]:
        for i, r in layers.items():
            if i < 0:
                raise ValueError(f"layer {i}: layer indices start at 0")
            if r not in RATIOS:
                raise ValueError(f"layer {i}: ratio {r:g} is not one of {', '.join(f'{x:g}' for x in RATIOS)} "
                                 f"(1/8, 1/4, 1/2, 1)")
        return dict(sorted(layers.items()))

    def __hash__(self) -> int:
        return hash((self.bias_k, tuple(self.layers.items())))


Loss = Literal["cross-entropy", "reconstruction"]


@dataclass(frozen=True)
class Technique:
    """How a model is trained: which tensors update (scheme) and in which arithmetic (numerics)."""

    scheme: Literal["full", "last", "bias", "sparse", "pepita", "mempepita"]
    numerics: Literal["fp32", "int8", "int8-noqas"]
    k: int = 1  # layers with parameters counted from the end, for "last" and "bias"; "sparse": biases (bias_k)
    layers: tuple[tuple[int, float], ...] = ()  # "sparse": (layer index, ratio of output channels) whose weights train
    label: str = ""  # a name of its own (equal-budget variants: "last-fp32@16KB"); default scheme-numerics
    loss: Loss = "cross-entropy"  # "reconstruction": an autoencoder's MSE against its input (the profile's ``loss``)

    @property
    def name(self) -> str:
        return self.label or f"{self.scheme}-{self.numerics}"

    @property
    def is_int8(self) -> bool:
        return self.numerics != "fp32"

    @property
    def qas(self) -> bool:
        return self.numerics == "int8"

    @property
    def forward_only(self) -> bool:
        """PEPITA or MEMPEPITA: two forward passes, no backward pass (docs/plan-format.md)."""
        return self.scheme in FORWARD_ONLY

    def trainable(self, param_layers: list[int]) -> set[tuple[int, str]]:
        """The (layer index, "w"|"b") tensors this technique updates, given the layers that have parameters."""
        if self.scheme == "full":
            return {(i, p) for i in param_layers for p in ("w", "b")}
        if self.forward_only:  # every weight; PEPITA has no bias update (Dellaferrera & Kreiman 2022)
            return {(i, "w") for i in param_layers}
        tail = param_layers[-self.k :] if self.k > 0 else []
        if self.scheme == "sparse":
            return {(i, "b") for i in tail} | {(i, "w") for i, _ in self.layers}
        params = ("w", "b") if self.scheme == "last" else ("b",)
        return {(i, p) for i in tail for p in params}


def parse_technique(name: str, k: int = 1, sparse: SparseSpec | dict | None = None) -> Technique:
    """``k`` applies to "last" and "bias"; ``sparse`` (the [sparse] table) is required by, and read for, "sparse"."""
    if name in TECHNIQUES:
        scheme, numerics = name.split("-", 1)
        if scheme != "sparse":
            return Technique(scheme=scheme, numerics=numerics, k=k)  # type: ignore[arg-type]
        if sparse is None:
            raise TechniqueError(f"technique '{name}' needs a [sparse] table (bias_k, layers)")
        spec = sparse if isinstance(sparse, SparseSpec) else SparseSpec.model_validate(sparse)
        return Technique(scheme="sparse", numerics=numerics, k=spec.bias_k,  # type: ignore[arg-type]
                         layers=tuple(spec.layers.items()))
    scheme, _, numerics = name.partition("-")
    if scheme in FORWARD_ONLY and numerics in NUMERICS:
        raise TechniqueError(f"technique '{name}' is not implemented: forward-only training runs in fp32 only "
                             f"({scheme}-fp32); its update in int8 arithmetic is not written yet")
    raise TechniqueError(f"unknown technique '{name}'; valid: {', '.join(TECHNIQUES)}")


LearningRates = float | tuple[float, ...]


class CompareSpec(BaseModel):
    """The ``[compare]`` table: schemes compared at one memory budget (MCUNetV3 Fig. 9's question). For each of
    last-k, bias-k and sparse update the run adds the scheme with the most trained parameters (last-k, bias-k: the
    largest k; sparse: the best contribution-analysis scheme, `bench.plan.search`) whose planned arena fits
    ``budget`` (e.g. "12KB"); ``numerics`` is the arithmetic they train in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    budget: str
    numerics: Literal["fp32", "int8", "int8-noqas"] = "fp32"


class DatasetSpec(BaseModel):
    """The ``[dataset]`` table of a profile whose ``task`` is a file or folder (docs/datasets.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label_column: str | None = None  # CSV: the column holding the class (default: the last one)
    eval_fraction: float = Field(default=0.3, gt=0.0, lt=0.9)  # CSV and folders: held-out split
    pretrain_fraction: float = Field(default=0.4, ge=0.0, lt=0.9)  # CSV and folders: host pretraining split
    image_size: tuple[int, int] | None = None  # folders: (height, width) every image is resized to
    noise_std: float = Field(default=0.0, ge=0.0)  # drift: Gaussian noise on the device splits (normalised units)
    rotate_deg: float = 0.0  # drift: images of the device splits rotated by this angle
    gain_drift: float = Field(default=0.0, ge=0.0, lt=1.0)  # drift: per-feature gain in [1 - g, 1 + g]
    shift_drift: float = Field(default=0.0, ge=0.0)  # drift: per-feature offset in [-s, s] (normalised units)
    swap_features: float = Field(default=0.0, ge=0.0, le=1.0)  # drift: this share of the features trade places
    flip_features: float = Field(default=0.0, ge=0.0, le=1.0)  # drift: this share of the features change sign


class Profile(BaseModel):
    """One experiment: every board of the rack runs every technique on the same task and model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    task: str = "digits-drift"  # a built-in task (`bench list tasks`), or a .npz, .csv or image folder
    dataset: DatasetSpec | None = None  # how a file task is split, normalised and drifted
    model: str = "digits-cnn"
    techniques: tuple[str, ...] = Field(min_length=1)
    last_k: int = Field(default=1, ge=1)  # layers with parameters, from the end, for both last-* and bias-*
    sparse: SparseSpec | None = None  # the [sparse] table of sparse-* techniques
    # imported models only: replace the classifier head with a fresh one of this many classes (the task's count)
    head_classes: int | None = Field(default=None, ge=2, le=255)
    # imported int8 models only: "reconstruction" trains an autoencoder (no SOFTMAX, as many outputs as inputs) on
    # the mean squared error of its output against its input; the task's labels then only tag samples
    loss: Loss = "cross-entropy"
    steps: int = Field(default=200, gt=0, le=1_000_000)
    # one learning rate, or a list to sweep: each technique then trains at every lr on a validation split carved
    # from the device-train data (`val_fraction`), and its final runs use the lr with the best mean validation
    # accuracy; the eval split is never used to choose
    lr: LearningRates = 0.01
    # learning rate(s) of the int8 techniques (default: lr). int8 codes saturate at ±127, where each channel's largest
    # pretrained weight already sits, so int8 SGD tolerates smaller steps than fp32 (docs/qplan-format.md)
    lr_int8: LearningRates | None = None
    # per technique name, overriding both (e.g. int8 without QAS, whose code steps are ~s_W^2 of fp32's at one lr)
    lr_by_technique: dict[str, LearningRates] = Field(default_factory=dict)
    # runs per (board, technique, lr), each with its own sample order (device seed ``seed + repeat``); figures that
    # vary are reported as mean and 95% confidence interval over them
    repeats: int = Field(default=1, ge=1, le=50)
    val_fraction: float = Field(default=0.25, gt=0.0, lt=0.9)  # lr sweeps: share of device-train held out
    compare: CompareSpec | None = None  # the [compare] table: schemes at equal memory budget
    seed: int = Field(default=1, ge=0, lt=2**32)
    eval_samples: int = Field(default=0, ge=0, lt=65536)
    grad_every: int = Field(default=0, ge=0, lt=65536)
    check_steps: int = Field(default=3, ge=0, le=100)
    timeout_s: float = Field(default=600.0, gt=0)  # a whole conversation (check run, training run) at most
    stall_timeout_s: float = Field(default=15.0, gt=0)  # silence that means the device hangs (it beats each second)
    # regression-gate overrides for `bench compare` (sram_pct, flash_pct, instructions_pct, energy_pct,
    # accuracy_points); bench.report.compare validates the key names
    thresholds: dict[str, float] = Field(default_factory=dict)

    @field_validator("lr_by_technique", mode="after")
    @classmethod
    def _per_technique(cls, table: dict[str, LearningRates]) -> dict[str, LearningRates]:
        for name, value in table.items():
            if name not in TECHNIQUES:
                raise ValueError(f"{name!r} is not a technique ({', '.join(TECHNIQUES)})")
            cls._positive(value)
        return table

    @field_validator("lr", "lr_int8", mode="after")
    @classmethod
    def _positive(cls, value: LearningRates | None) -> LearningRates | None:
        values = value if isinstance(value, tuple) else () if value is None else (value,)
        if isinstance(value, tuple) and not value:
            raise ValueError("an lr sweep needs at least one value")
        if any(v <= 0 for v in values):
            raise ValueError(f"learning rates must be > 0, got {value}")
        if isinstance(value, tuple) and len(set(value)) != len(value):
            raise ValueError(f"learning rates repeat in {value}")
        return value

    def parsed_techniques(self) -> list[Technique]:
        return [self.technique(t) for t in self.techniques]

    def lrs_for(self, technique: Technique) -> tuple[float, ...]:
        """The learning rates a technique trains with: its ``lr_by_technique`` entry, else ``lr_int8`` (when set) for
        int8 numerics, else ``lr``; more than one is a sweep."""
        value = self.lr_int8 if technique.is_int8 and self.lr_int8 is not None else self.lr
        value = self.lr_by_technique.get(f"{technique.scheme}-{technique.numerics}", value)
        return value if isinstance(value, tuple) else (value,)

    def lr_for(self, technique: Technique) -> float:
        """The learning rate of a technique that is not swept (a sweep's first value otherwise)."""
        return self.lrs_for(technique)[0]

    @property
    def sweeps(self) -> bool:
        return any(len(self.lrs_for(t)) > 1 for t in self.parsed_techniques())

    @property
    def imported(self) -> Path | None:
        """The .tflite file of an imported model (it may not exist), None for a bench/model/zoo.py model."""
        return model_path(self.model)

    def technique(self, name: str) -> Technique:
        """Technique ``name`` with this profile's settings (``last_k``, ``[sparse]``, ``loss``)."""
        return dataclasses.replace(parse_technique(name, self.last_k, self.sparse), loss=self.loss)


def profile_path(spec: str | Path) -> Path:
    """A profile's file: ``spec`` as a path, or a name from ``profiles/`` ("quick" → profiles/quick.toml)."""
    path = Path(spec)
    if not path.exists() and not path.suffix:
        path = PROFILES_DIR / f"{spec}.toml"
    return path


def load_profile(spec: str | Path) -> Profile:
    """A profile by path or name, checked as a description (keys, types, technique names, the model file exists);
    whether ``[sparse]`` fits the model is the plan stage's check (`bench.plan.check_profile`)."""
    path = profile_path(spec)
    data = read_toml(path)
    data.setdefault("name", path.stem)
    profile = validate_file(Profile, path, data)
    try:
        profile.parsed_techniques()
    except TechniqueError as e:
        key = "sparse" if "[sparse]" in str(e) else "techniques"
        raise TechniqueError(f"{path}: key '{key}': {e}") from None
    if profile.imported is not None:
        require_model_file(profile.model)
    elif profile.head_classes is not None:
        raise ConfigError(f"{path}: key 'head_classes': only for imported .tflite models, not '{profile.model}'")
    if profile.loss == "reconstruction" and (profile.imported is None or profile.head_classes is not None):
        raise ConfigError(f"{path}: key 'loss': a reconstruction trains an imported autoencoder (.tflite) as it is, "
                          f"without head_classes")
    return profile


