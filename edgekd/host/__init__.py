"""The host side: what needs torch, tensorflow, onnx or matplotlib.

Data synthesis and import, models, distillation, export, the reports and the
experiments (demo, paper reproductions). The host may import ``edgekd.device``;
the device side never imports the host.
"""
