"""Target stage: the drivers that load and reset a board and give its byte stream's URL (`drivers.py`: `QemuTarget`,
`PyocdTarget`; `twinhost.py`: a twin on a twin host behind a labgrid place; `factory.make_target` picks one for a
rack entry), labgrid's client (`lab.py`), and probe and port discovery for rack files (`scan.py`).
"""
