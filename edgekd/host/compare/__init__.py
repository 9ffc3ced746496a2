"""``edgekd bench --compare``: every format of every student, and its teacher, in one interleaved run.

For each student of a bundle the comparison loads, in ONE process:

- the teacher in PyTorch fp32 (the model a user would otherwise deploy),
- the student in PyTorch fp32 (its checkpoint, found from the manifest or ``--checkpoints``),
- the bundle's ONNX fp32, ONNX QDQ int8, TFLite fp32 (fp16) and TFLite int8 artifacts,

and times them INTERLEAVED: each round runs every format for a short block of
back-to-back calls on held-out test windows, in an order that rotates per
round, so slow drift (thermal throttling, frequency scaling, a neighbour's
load) hits all formats equally instead of whichever ran last. Blocks, not single
calls: the first call after another format ran finds the caches full of that
format's code and data (measured: +35 us on a ~20 us TFLite int8 LiDAR call
after a PyTorch call), a cost of benchmarking six runtimes in one process, not
of the format; a deployment runs one model back to back. That first call per
block is still timed and reported apart (``latency_after_switch``).

Each format is timed as a deployment runs it, end to end (float32 window
already in the model's layout in, float32 logits out): int8 TFLite includes
quantising the input and dequantising the output; buffers are allocated and
tensor indices, scales and names are looked up once at load
(``Backend.runner``), never per call; PyTorch runs under ``inference_mode``.
All formats, PyTorch included, run with the same thread count (the target's).

The first pass over the evaluation windows also yields the predictions that
give top-2 accuracy (mean over horizons) on the held-out test split.
Energy per inference comes from firmware_bench's meters, one short block per
format (a meter cannot split an interleaved loop); with no readable meter it is
the target's power model, labelled ``estimated`` everywhere.

A format that is absent from the bundle is a row with status ``missing``, one
that fails to load or run is ``error: ...``; nothing is dropped silently.
The acceptance verdict (TFLite int8 against the teacher) is judged by a rule
the user passes (``--min-speedup``, ``--max-top2-drop``; defaults 10x and 3
points) and recorded with it (``acceptance_rule``).
Host side: PyTorch is imported lazily, only here.

One module per job: ``discovery`` (which checkpoints and dataset: flags, the
manifest's record, a demo folder), ``candidates`` (loading each format as a
runner), ``timing`` (the interleaved loop, the int8 phase split), ``energy``,
``summary`` (rows, ratios, acceptance), the writers ``markdown``, ``tables``
(CSV), ``plot`` and ``writers``, ``run`` (the comparison) and ``cli`` (what
``edgekd bench --compare`` calls, by name, from the device side).
"""

from edgekd.host.compare.candidates import artifact_runner, load_candidates, torch_runner
from edgekd.host.compare.discovery import DemoLayout, demo_layout, find_student_checkpoint, find_teacher
from edgekd.host.compare.energy import energy_blocks, energy_text
from edgekd.host.compare.formats import (
    ARTIFACT_FORMATS,
    FORMATS,
    OPTIONAL_FORMATS,
    SCHEMA,
    TEACHER,
    TIMING,
    Candidate,
    Runner,
)
from edgekd.host.compare.markdown import to_markdown
from edgekd.host.compare.plot import plot_latency_cdf
from edgekd.host.compare.run import compare_bundle, eval_windows, find_sources
from edgekd.host.compare.settings import MAX_TOP2_DROP_POINTS, MIN_SPEEDUP, CompareSettings, resolve_settings
from edgekd.host.compare.summary import acceptance, summarise
from edgekd.host.compare.tables import to_csv
from edgekd.host.compare.timing import PHASE_RUNS, interleaved_loop, phase_split, rotation
from edgekd.host.compare.writers import write_compare

__all__ = ["ARTIFACT_FORMATS", "FORMATS", "MAX_TOP2_DROP_POINTS", "MIN_SPEEDUP", "OPTIONAL_FORMATS", "PHASE_RUNS",
           "SCHEMA", "TEACHER", "TIMING", "Candidate", "CompareSettings", "DemoLayout", "Runner", "acceptance",
           "artifact_runner", "compare_bundle", "demo_layout", "energy_blocks", "energy_text", "eval_windows",
           "find_sources", "find_student_checkpoint", "find_teacher", "interleaved_loop", "load_candidates",
           "phase_split", "plot_latency_cdf", "resolve_settings", "rotation", "summarise", "to_csv", "to_markdown",
           "torch_runner", "write_compare"]
