"""Memory figures: /proc/self/status parsing, the psutil-free fallback, resetting the peak, file sizes."""

from __future__ import annotations

import numpy as np

from firmware_bench import memory

STATUS = """Name:\tpython
VmPeak:\t  912344 kB
VmSize:\t  911000 kB
VmHWM:\t   80516 kB
VmRSS:\t   48700 kB
Threads:\t3
"""


def test_parse_proc_status_in_bytes():
    values = memory.parse_proc_status(STATUS)
    assert values["VmHWM"] == 80516 * 1024 and values["VmRSS"] == 48700 * 1024
    assert "Threads" not in values


def test_snapshot_from_a_status_file_without_psutil(tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "psutil", None)
    status = tmp_path / "status"
    status.write_text(STATUS)
    snap = memory.snapshot(status)
    assert snap["rss_bytes"] == 48700 * 1024 and snap["rss_source"].endswith("VmRSS")
    assert snap["peak_rss_bytes"] == 80516 * 1024
    # No /proc (macOS, some containers): the peak falls back to getrusage.
    snap = memory.snapshot(tmp_path / "missing")
    assert snap["peak_source"] == "getrusage ru_maxrss" and snap["peak_rss_bytes"] == memory.ru_maxrss_bytes() > 0
    assert snap["rss_source"] == "unavailable"


def test_reset_peak_lowers_vmhwm_after_a_spike():
    spike = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB touched
    high = memory.snapshot()["peak_rss_bytes"]
    del spike
    if not memory.reset_peak():
        return  # kernel without clear_refs: the harness reports only the lifetime peak then
    after = memory.snapshot()["peak_rss_bytes"]
    assert after < high - 32 * 1024 * 1024


def test_file_sizes(tmp_path):
    (tmp_path / "m.tflite").write_bytes(b"x" * 123)
    assert memory.file_sizes({"model": tmp_path / "m.tflite", "gone": tmp_path / "no"}) == {"model": 123, "gone": None}
