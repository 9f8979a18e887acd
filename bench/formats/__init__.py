"""Binary formats declared once, the bottom layer: field layouts from which the host's packers and decoders follow
(`layout.py`), the blob records the device reads (`blobs.py`: plan, int8 plan, dataset), and the C header of their
offsets the firmware is built with (`cheader.py` writes firmware/engine/formats.h; a test keeps it current and
checks the docs' tables field by field).
"""
