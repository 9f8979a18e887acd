"""Link stage: COBS/CRC frames and the messages declared as layouts (`protocol.py`), a journaled link over any pyserial
URL (`link.py`), and the conversation with the training firmware (`session.py`).
"""
