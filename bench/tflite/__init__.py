"""TFLite flatbuffers in and out (`io.py`), post-training quantisation and export of zoo models (`quantize.py`),
and replacing an imported classifier head (`head.py`).
"""
