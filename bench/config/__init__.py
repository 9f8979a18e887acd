"""Passive descriptions, the bottom layer: boards and racks (`boards.py`), profiles and techniques (`profile.py`).

Nothing here imports another stage: a description says what exists, the stages above decide what to do with it.
"""
