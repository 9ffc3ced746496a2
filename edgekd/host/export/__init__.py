"""Export: torch -> ONNX -> TFLite (fp32 / fp16 / full-int8) and ONNX QDQ, parity gate, bundles.

Host side (torch, onnx, onnx2tf, tensorflow in a child process). Importing this
package is light; ``export_bundle`` pulls the heavy modules on first use.
"""

from __future__ import annotations

__all__ = ["export_bundle", "ParityGateError"]


def __getattr__(name: str):
    if name in __all__:
        from edgekd.host.export import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'edgekd.host.export' has no attribute {name!r}")
