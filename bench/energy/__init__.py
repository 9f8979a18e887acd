"""Energy per training step: meters (PPK2, Joulescope, the twin's model) and integration between marker edges.

Measured figures come from a meter sampling the DUT's current while the firmware toggles a GPIO at every phase
boundary; modelled figures come from counts and datasheet currents. Both go through the same integration and carry
their source (``EnergyResult.label``: "measured (ppk2)", "modelled (model)").
"""

from bench.energy.capture import Capture, Meter, MeterBase, MeterError, MeterNotFound
from bench.energy.integrate import (
    PHASES,
    EnergyResult,
    Scheme,
    Spread,
    StepEnergies,
    decode,
    energy_between,
    interval_energies,
    level_step_energies,
    marker_edges,
    measure_trials,
    spread,
    step_energies,
    summarise,
)
from bench.energy.joulescope_meter import JoulescopeMeter
from bench.energy.model import ModelMeter, board_energy_uj, model_energy_uj
from bench.energy.ppk2_meter import Ppk2Meter

__all__ = [
    "PHASES", "Capture", "EnergyResult", "JoulescopeMeter", "Meter", "MeterBase", "MeterError", "MeterNotFound",
    "ModelMeter", "Ppk2Meter", "Scheme", "Spread", "StepEnergies", "board_energy_uj", "decode", "energy_between",
    "interval_energies", "level_step_energies", "marker_edges", "measure_trials", "model_energy_uj", "spread",
    "step_energies", "summarise",
]
