"""What every meter hands back: sampled current and voltage with the DUT's marker inputs, at a known rate.

Drivers differ only in how they fill a ``Capture``; integration (``bench.energy.integrate``) never knows which meter
made it. ``source`` says whether the numbers were measured by an instrument or modelled from counts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol

import numpy as np

Source = Literal["measured", "modelled"]


class MeterError(RuntimeError):
    """A meter could not be reached, configured or read; the message says which meter and what to do."""


class MeterNotFound(MeterError):
    """No meter of the requested kind is attached."""


@dataclass(frozen=True, eq=False)
class Capture:
    """Samples of one capture: current (A), voltage (V) and digital input bits (bit n = input n) per sample."""

    meter: str
    sample_rate_hz: float
    current_a: np.ndarray
    voltage_v: np.ndarray
    digital: np.ndarray
    source: Source = "measured"

    def __post_init__(self) -> None:
        n = len(self.current_a)
        if len(self.voltage_v) != n or len(self.digital) != n:
            raise ValueError(f"{self.meter}: capture arrays differ in length: current {n}, voltage "
                             f"{len(self.voltage_v)}, digital {len(self.digital)}")
        if self.sample_rate_hz <= 0:
            raise ValueError(f"{self.meter}: sample rate must be positive, got {self.sample_rate_hz}")

    @property
    def samples(self) -> int:
        return len(self.current_a)

    @property
    def duration_s(self) -> float:
        return self.samples / self.sample_rate_hz

    @property
    def power_w(self) -> np.ndarray:
        return np.asarray(self.current_a, dtype=np.float64) * np.asarray(self.voltage_v, dtype=np.float64)

    def marker(self, channel: int) -> np.ndarray:
        """The level (0/1) of digital input ``channel`` at every sample."""
        return (np.asarray(self.digital, dtype=np.int64) >> channel) & 1


class Meter(Protocol):
    """Arm once (connect, configure, power the DUT), then start/stop around what is measured, then close."""

    name: str
    source: Source

    def arm(self) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> Capture: ...

    def close(self) -> None: ...


class MeterBase(ABC):
    """Context-manager plumbing shared by the drivers: ``with meter:`` arms it and always closes it."""

    name = "meter"
    source: Source = "measured"

    @abstractmethod
    def arm(self) -> None: ...

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> Capture: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> MeterBase:
        try:
            self.arm()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
