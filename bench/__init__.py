"""Hardware-in-the-loop bench for on-device training on microcontrollers."""

__version__ = "0.1.0"
