"""Target stage: the drivers that load and reset a board and give its byte stream's URL (`drivers.py`: `QemuTarget`,
`PyocdTarget`, `make_target`), and probe and port discovery for rack files (`scan.py`).
"""
