"""x86 RAPL energy counters through the powercap sysfs interface.

``/sys/class/powercap/intel-rapl:N/`` (AMD CPUs use the same driver and
names) has ``name`` (``package-0``, ``psys``, ...), ``energy_uj`` (a counter in
microjoules) and ``max_energy_range_uj`` (where the counter wraps to 0).
Package domains cover the CPU package (cores + uncore), not DRAM or the rest
of the board. Since Linux 5.10 ``energy_uj`` is readable by root only
(CVE-2020-8694, the PLATYPUS power side channel); the reader says so rather
than reporting nothing.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

from firmware_bench.power.base import METERS, MeterOptions, PowerReader

_TOP_DOMAIN = re.compile(r"^intel-rapl:\d+$")

# The counter is polled at least this often so that more than one wrap within
# a run cannot go unseen (a 262 kJ range wraps after ~45 min at 100 W).
_POLL_S = 1.0


def counter_delta(previous: int, current: int, max_range: int) -> int:
    """Microjoules between two reads of a counter that wraps to 0 after ``max_range``."""
    if current >= previous:
        return current - previous
    return max_range - previous + current


@METERS.register("rapl")
class RaplReader(PowerReader):
    meter = "rapl"
    scope = "CPU package(s) (RAPL; excludes DRAM and the rest of the board)"

    def __init__(self, options: MeterOptions):
        super().__init__(options)
        self._domains: list[Path] = []
        self._last: dict[Path, int] = {}
        self._max: dict[Path, int] = {}
        self._total_uj = 0
        self._t0 = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def base(self) -> Path:
        return self.options.sys_path("class", "powercap")

    def _read_int(self, path: Path) -> int:
        return int(self.options.read_text(path).strip())

    def find_domains(self) -> list[Path]:
        """Package domains (``package-*``); the platform domain ``psys`` only when there is none.

        Summing psys and packages would count the packages twice.
        """
        tops = sorted(p for p in self.base.iterdir() if _TOP_DOMAIN.match(p.name))
        names = {}
        for top in tops:
            try:
                names[top] = self.options.read_text(top / "name").strip()
            except OSError:
                continue
        packages = [p for p, n in names.items() if n.startswith("package")]
        return packages or [p for p, n in names.items() if n == "psys"]

    def available(self) -> tuple[bool, str]:
        if not self.base.is_dir():
            return False, (f"{self.base} not found: no RAPL powercap interface (not x86, "
                           "or a VM/container that hides it)")
        domains = self.find_domains()
        if not domains:
            return False, f"no RAPL package domain (intel-rapl:N with name package-*) under {self.base}"
        for domain in domains:
            energy = domain / "energy_uj"
            try:
                self._read_int(energy)
                self._read_int(domain / "max_energy_range_uj")
            except PermissionError:
                return False, (f"{energy} is not readable: permission denied. Since Linux 5.10 RAPL "
                               "energy counters are root-only (CVE-2020-8694); run as root or "
                               f"'sudo chmod a+r {self.base}/intel-rapl:*/energy_uj'")
            except (OSError, ValueError) as exc:
                return False, f"cannot read {energy}: {exc}"
        names = ", ".join(self.options.read_text(d / "name").strip() for d in domains)
        return True, f"RAPL domains {names} under {self.base}"

    def _poll(self) -> None:
        with self._lock:
            for domain in self._domains:
                current = self._read_int(domain / "energy_uj")
                self._total_uj += counter_delta(self._last[domain], current, self._max[domain])
                self._last[domain] = current
            self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(_POLL_S):
            try:
                self._poll()
            except (OSError, ValueError):
                continue  # a torn read; the next poll or stop() catches up

    def start(self) -> None:
        self._domains = self.find_domains()
        self._max = {d: self._read_int(d / "max_energy_range_uj") for d in self._domains}
        self._last = {d: self._read_int(d / "energy_uj") for d in self._domains}
        self._t0 = time.perf_counter()
        self._total_uj = 0
        self.samples = 1
        self.notes = [f"domains: {', '.join(d.name for d in self._domains)}; counters wrap at "
                      + ", ".join(str(v) for v in self._max.values()) + " uJ"]
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="rapl-poll", daemon=True)
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._poll()
        self.window_s = time.perf_counter() - self._t0
        return self._total_uj / 1e6
