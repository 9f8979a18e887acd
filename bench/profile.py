"""Profiles: experiment definitions (TOML) naming a task, a model, techniques and training settings.

First stage of the data path (profile → plan → image → target → link → records → report). A technique is
``<scheme>-<numerics>``; which ones this version can run is listed in ``TECHNIQUES``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bench.boards import REPO_ROOT, read_toml, validate_file

PROFILES_DIR = REPO_ROOT / "profiles"

SCHEMES = ("full", "last", "bias")
NUMERICS = ("fp32",)
TECHNIQUES = tuple(f"{s}-{n}" for s in SCHEMES for n in NUMERICS)
PLANNED = ("sparse-fp32", "full-int8", "last-int8", "bias-int8", "sparse-int8", "full-int8-noqas")


class TechniqueError(ValueError):
    """An unknown or not yet runnable technique name."""


@dataclass(frozen=True)
class Technique:
    """How a model is trained: which tensors update (scheme) and in which arithmetic (numerics)."""

    scheme: Literal["full", "last", "bias"]
    numerics: Literal["fp32"]
    k: int = 1  # layers with parameters counted from the end, for "last" and "bias"

    @property
    def name(self) -> str:
        return f"{self.scheme}-{self.numerics}"

    def trainable(self, param_layers: list[int]) -> set[tuple[int, str]]:
        """The (layer index, "w"|"b") tensors this technique updates, given the layers that have parameters."""
        if self.scheme == "full":
            return {(i, p) for i in param_layers for p in ("w", "b")}
        tail = param_layers[-self.k :]
        params = ("w", "b") if self.scheme == "last" else ("b",)
        return {(i, p) for i in tail for p in params}


def parse_technique(name: str, k: int = 1) -> Technique:
    if name in TECHNIQUES:
        scheme, numerics = name.split("-", 1)
        return Technique(scheme=scheme, numerics=numerics, k=k)  # type: ignore[arg-type]
    hint = " (planned, not implemented in this version)" if name.startswith(PLANNED) else ""
    raise TechniqueError(f"unknown technique '{name}'{hint}; valid: {', '.join(TECHNIQUES)}")


class Profile(BaseModel):
    """One experiment: every board of the rack runs every technique on the same task and model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    task: str = "digits-drift"
    model: str = "digits-cnn"
    techniques: tuple[str, ...] = Field(min_length=1)
    last_k: int = Field(default=1, ge=1)
    steps: int = Field(default=200, gt=0, le=1_000_000)
    lr: float = Field(default=0.01, gt=0)
    seed: int = Field(default=1, ge=0, lt=2**32)
    eval_samples: int = Field(default=0, ge=0, lt=65536)
    grad_every: int = Field(default=0, ge=0, lt=65536)
    check_steps: int = Field(default=3, ge=0, le=100)
    timeout_s: float = Field(default=600.0, gt=0)
    # regression-gate overrides for `bench compare` (sram_pct, flash_pct, instructions_pct, energy_pct,
    # accuracy_points); bench.compare validates the key names
    thresholds: dict[str, float] = Field(default_factory=dict)

    def parsed_techniques(self) -> list[Technique]:
        return [parse_technique(t, self.last_k) for t in self.techniques]


def load_profile(spec: str | Path) -> Profile:
    """A profile by path, or by name from ``profiles/`` ("quick" → profiles/quick.toml)."""
    path = Path(spec)
    if not path.exists() and not path.suffix:
        path = PROFILES_DIR / f"{spec}.toml"
    data = read_toml(path)
    data.setdefault("name", path.stem)
    profile = validate_file(Profile, path, data)
    try:
        profile.parsed_techniques()
    except TechniqueError as e:
        raise TechniqueError(f"{path}: key 'techniques': {e}") from None
    return profile
