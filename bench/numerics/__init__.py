"""The host's arithmetic, independent of the firmware: the fp32 reference (`fp32.py`), gemmlowp fixed point
(`quant.py`), the per-op int8 prepare constants (`int8prep.py`), the int8 forward (`int8ref.py`, bit-exact with
tflite-micro), the int8 training reference (`int8train.py`) and host pretraining (`pretrain.py`).
"""
