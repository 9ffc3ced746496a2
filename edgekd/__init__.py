"""edgekd: distil beam-tracking students on a host, export them to int8 TFLite, run them on edge boards.

This package root must stay light: the on-board runtime (``edgekd.device.runtime``) and
``firmware_bench`` import it, and a board has only numpy and an interpreter.
Never import torch or tensorflow here.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
