"""The top layer: the runner that calls one entry per stage in order (`runner.py`), the CLI, the pytest plugin and the
benchmarks.
"""
