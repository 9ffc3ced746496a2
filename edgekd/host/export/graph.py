"""Op lists of exported graphs, and what in them a lean student should not need.

The manifest records ``{op type: count}`` per artifact. ``lean_graph_notes``
flags the ops an unrolled GRU or tensor indexing typically adds without doing
arithmetic (per-step GATHER / STRIDED_SLICE / SLICE, TRANSPOSE, layout
RESHAPE chains); the export log and the lead's BENCHMARKS.md report them.
"""

from __future__ import annotations

import os
from collections import Counter

# Data-movement ops: they cost latency (and int8 requantisation) but no arithmetic.
MOVEMENT_OPS = {
    "tflite": ("GATHER", "STRIDED_SLICE", "SLICE", "TRANSPOSE", "SPLIT", "SPLIT_V", "PACK", "UNPACK",
               "CONCATENATION", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "GATHER_ND", "DEQUANTIZE", "QUANTIZE"),
    "onnx": ("Gather", "Slice", "Transpose", "Split", "Concat", "Reshape", "Squeeze", "Unsqueeze",
             "GatherND", "Shape", "QuantizeLinear", "DequantizeLinear"),
}
# Ops that, when they outnumber the recurrent steps, point at per-step indexing worth removing.
PER_STEP_SUSPECTS = {"GATHER", "STRIDED_SLICE", "SLICE", "TRANSPOSE", "Gather", "Slice", "Transpose"}


def tflite_ops(path: str | os.PathLike) -> dict[str, int]:
    """Op type -> count of a .tflite file (plain graph, no delegate placeholders)."""
    from edgekd.device.runtime.backends import tflite_op_counts

    return tflite_op_counts(path)


def onnx_ops(path: str | os.PathLike) -> dict[str, int]:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return dict(sorted(Counter(node.op_type for node in proto.graph.node).items()))


def movement_share(ops: dict[str, int], kind: str = "tflite") -> float:
    """Fraction of ops that only move data."""
    total = sum(ops.values())
    moving = sum(n for op, n in ops.items() if op in MOVEMENT_OPS[kind])
    return moving / total if total else 0.0


def lean_graph_notes(ops: dict[str, int], *, steps: int, kind: str = "tflite") -> list[str]:
    """Human-readable notes on needless ops; ``steps`` = recurrent steps (T + horizons - 1)."""
    notes = []
    for op in sorted(PER_STEP_SUSPECTS & set(ops)):
        if ops[op] >= steps:
            # onnx2tf lowers every Split (the GRU's input gates, each step's r/z pair) to one STRIDED_SLICE
            # per output (~3 per step); tflite_compact merges slices that partition a tensor back into one
            # SPLIT / SPLIT_V, so shipped files show none of these. More than ~4 per step is worth a look.
            level = "expected for an unrolled GRU (onnx2tf lowers each Split output to one)" \
                if op == "STRIDED_SLICE" and ops[op] <= 4 * steps else \
                "per-step indexing (precompute the input projection for all steps and split once, or fuse the gates)"
            notes.append(f"{ops[op]} x {op} for {steps} recurrent steps: {level}")
    if ops.get("TRANSPOSE", 0) or ops.get("Transpose", 0):
        notes.append(f"{ops.get('TRANSPOSE', ops.get('Transpose'))} x TRANSPOSE: layout changes inside the graph")
    share = movement_share(ops, kind)
    if share > 0.5:
        notes.append(f"{share:.0%} of the ops only move data")
    return notes
