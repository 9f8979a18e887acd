"""Records stage: what a run produced, as typed records and results tables written after every run (`run.py`), and
the fidelity of its gradients against the host references (`fidelity.py`).
"""
