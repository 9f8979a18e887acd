"""Joulescope JS110/JS220 through the ``joulescope`` package (extra ``joulescope``): current, voltage and 2 GPIs.

``Device.read(duration=…)`` captures a fixed window, as MLPerf Tiny's ≥ 10 s windows; the GPI inputs come back as the
``current_lsb``/``voltage_lsb`` fields (a JS110 must be told to route its GPIs there, a JS220 streams them anyway).
"""

from __future__ import annotations

import contextlib
import threading
from types import ModuleType
from typing import Any

import numpy as np

from bench.energy.capture import Capture, MeterBase, MeterError, MeterNotFound

FIELDS = ["current", "voltage", "current_lsb", "voltage_lsb"]


def _module() -> ModuleType:
    try:
        import joulescope
    except ImportError as exc:
        raise MeterError("joulescope is not installed: `pip install -e '.[joulescope]'`") from exc
    return joulescope


class JoulescopeMeter(MeterBase):
    name = "joulescope"

    def __init__(self, duration_s: float = 10.0, sample_rate_hz: float | None = None,
                 module: ModuleType | Any = None) -> None:
        self.duration_s, self.sample_rate_hz = duration_s, sample_rate_hz
        self._module = module
        self._device: Any = None
        self._reader: threading.Thread | None = None
        self._result: dict[str, Any] | None = None
        self._error: BaseException | None = None

    def arm(self) -> None:
        js = self._module or _module()
        try:
            device = js.scan_require_one(config="auto")
        except RuntimeError as exc:
            if "no devices" in str(exc):
                raise MeterNotFound("no Joulescope found (joulescope.scan_require_one: no devices found): is it "
                                    "plugged in, and do the udev rules from docs/rack.md grant access?") from exc
            raise MeterError(f"joulescope: {exc}: unplug all but one") from exc
        device.open()
        self._device = device
        if self.sample_rate_hz:
            device.parameter_set("sampling_frequency", int(self.sample_rate_hz))
        for field, gpi in (("current_lsb", "gpi0"), ("voltage_lsb", "gpi1")):
            with contextlib.suppress(KeyError, ValueError):  # a JS220 streams its GPIs anyway
                device.parameter_set(field, gpi)  # JS110: route the GPIs into the sample stream

    def start(self) -> None:
        if self._device is None:
            raise MeterError("joulescope: start() before arm()")
        self._result, self._error = None, None
        self._reader = threading.Thread(target=self._read, name="joulescope-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            self._result = self._device.read(duration=self.duration_s, out_format="samples_get", fields=FIELDS)
        except Exception as exc:  # surfaced by stop(), with the meter named
            self._error = exc

    def stop(self) -> Capture:
        """End the window (early if still running) and return its samples."""
        assert self._reader is not None, "stop() before start()"
        if self._reader.is_alive():
            self._device.stop()
        self._reader.join(timeout=self.duration_s + 5)
        if self._error is not None or self._result is None:
            raise MeterError(f"joulescope: read failed: {self._error}") from self._error
        signals = self._result["signals"]
        value = {f: np.asarray(signals[f]["value"]) for f in FIELDS}
        digital = (value["current_lsb"].astype(np.uint8) & 1) | ((value["voltage_lsb"].astype(np.uint8) & 1) << 1)
        rate = float(self._device.output_sampling_frequency)
        return Capture(self.name, rate, value["current"].astype(np.float64), value["voltage"].astype(np.float64),
                       digital)

    def close(self) -> None:
        device, self._device = self._device, None
        if device is not None:
            device.close()
