"""On-board side: interpreter backends, sensor hub, modality policy, engine.

NO torch / tensorflow imports anywhere under this package (a board has numpy
and one interpreter). Keep this file light: submodules are imported on use.
"""
