"""Report stage: the self-contained HTML report (`html.py`) and the nightly regression gate (`compare.py`).
"""
