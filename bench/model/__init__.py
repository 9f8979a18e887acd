"""What is trained and on what: fp32 network descriptions (`nn.py`), the int8 graph type (`qgraph.py`), the zoo's
architectures (`zoo.py`) and the tasks with their datasets (`tasks/`).
"""
