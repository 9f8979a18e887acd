"""Nordic Power Profiler Kit II through ``ppk2-api`` (extra ``ppk2``): 100 kS/s current plus 8 logic inputs.

The PPK2 sends raw ADC words that ``get_samples`` turns into µA and the logic-port byte of each sample; it does no
integration, which is why the bench keeps its own. In source mode the PPK2 powers the DUT at ``source_mv`` and that
is the voltage; in ampere mode it only measures current, so the DUT's supply voltage must be given.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Literal

import numpy as np

from bench.energy.capture import Capture, MeterBase, MeterError, MeterNotFound

SAMPLE_RATE_HZ = 100_000.0


def _api_class() -> Any:
    try:
        from ppk2_api.ppk2_api import PPK2_API
    except ImportError as exc:
        raise MeterError("ppk2-api is not installed: `pip install -e '.[ppk2]'`") from exc
    return PPK2_API


class Ppk2Meter(MeterBase):
    name = "ppk2"

    def __init__(self, port: str | None = None, mode: Literal["source", "ampere"] = "source",
                 source_mv: int = 3300, supply_v: float | None = None, poll_s: float = 0.005,
                 api_class: Any = None) -> None:
        if mode == "ampere" and supply_v is None:
            raise MeterError("ppk2 in ampere mode measures current only: give supply_v, the DUT's supply voltage")
        self.port, self.mode, self.source_mv, self.poll_s = port, mode, source_mv, poll_s
        self.voltage_v = source_mv / 1000 if mode == "source" else float(supply_v or 0)
        self._api_class = api_class
        self._api: Any = None
        self._chunks: list[tuple[list[float], list[int]]] = []
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        self._error: BaseException | None = None

    def _choose_port(self, api_class: Any) -> str:
        if self.port:
            return self.port
        found = [d[0] if isinstance(d, tuple | list) else d for d in api_class.list_devices()]
        if not found:
            raise MeterNotFound("no PPK2 found (PPK2_API.list_devices() lists none): is it plugged in by its "
                                "USB DATA/POWER port, and may this user open serial ports (group dialout)?")
        if len(found) > 1:
            raise MeterError(f"{len(found)} PPK2s found ({', '.join(found)}): choose one with port=")
        return str(found[0])

    def arm(self) -> None:
        api_class = self._api_class or _api_class()
        port = self._choose_port(api_class)
        try:
            self._api = api_class(port, timeout=1, write_timeout=1, exclusive=True)
        except Exception as exc:  # pyserial raises SerialException / OSError for busy or vanished ports
            raise MeterError(f"ppk2 on {port}: cannot open ({type(exc).__name__}: {exc})") from exc
        self._api.get_modifiers()
        if self.mode == "source":
            self._api.use_source_meter()
            self._api.set_source_voltage(self.source_mv)
        else:
            self._api.use_ampere_meter()
        self._api.toggle_DUT_power("ON")
        self.port = port

    def start(self) -> None:
        if self._api is None:
            raise MeterError("ppk2: start() before arm()")
        self._chunks, self._error = [], None
        self._stop.clear()
        self._api.start_measuring()
        self._reader = threading.Thread(target=self._read_loop, name="ppk2-reader", daemon=True)
        self._reader.start()

    def _read_loop(self) -> None:
        try:
            while not self._stop.is_set():
                raw = self._api.get_data()
                if raw:
                    self._chunks.append(self._api.get_samples(raw))
                else:
                    time.sleep(self.poll_s)
        except Exception as exc:  # surfaced by stop(), with the meter named
            self._error = exc

    def stop(self) -> Capture:
        self._stop.set()
        if self._reader is not None:
            self._reader.join(timeout=5)
        self._api.stop_measuring()
        if self._error is not None:
            raise MeterError(f"ppk2 on {self.port}: reading failed: {self._error}") from self._error
        micro_amps = [s for samples, _ in self._chunks for s in samples]
        bits = [b for _, chunk_bits in self._chunks for b in chunk_bits]
        n = min(len(micro_amps), len(bits))
        current = np.asarray(micro_amps[:n], dtype=np.float64) * 1e-6
        return Capture(self.name, SAMPLE_RATE_HZ, current, np.full(n, self.voltage_v),
                       np.asarray(bits[:n], dtype=np.uint8))

    def close(self) -> None:
        """Release the serial port (ppk2-api has no close of its own); the DUT stays powered."""
        api, self._api = self._api, None
        port = getattr(api, "ser", None)
        if port is not None:
            port.close()
