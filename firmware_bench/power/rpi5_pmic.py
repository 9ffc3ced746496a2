"""Raspberry Pi 5 power from the PMIC's ADC: ``vcgencmd pmic_read_adc``.

The command prints one line per reading, currents and voltages of the same
rail under names that differ only in the suffix::

       VDD_CORE_A current(7)=0.77000000A
       VDD_CORE_V volt(15)=0.88065200V
        EXT5V_V volt(24)=5.13726100V

Rails are paired by name (``_A`` / ``_V`` stripped) and the board power is the
sum of V*I over the pairs. The 5 V input (``EXT5V_V``) has no current reading,
so the input stage (USB-C input, the PMIC's conversion losses, USB ports) is
missed: the figure is below what a meter at the power supply reads, and every
report says so.
"""

from __future__ import annotations

import re
import shutil
import subprocess

from firmware_bench.power.base import METERS, MeterOptions, PowerReader, Sampler

_READING = re.compile(r"^\s*(\S+)_([AV])\s+(current|volt)\(\d+\)=([-+0-9.eE]+)([AV])\s*$")

SCOPE = "sum of PMIC rails V*I; misses the 5 V input stage (USB-C input, PMIC losses, USB ports)"

MIN_INTERVAL_S = 0.1  # one vcgencmd call takes a few ms of CPU; do not crowd the benchmark


def parse_pmic_read_adc(text: str) -> dict[str, dict[str, float]]:
    """rail -> {"A": amps, "V": volts} (either may be missing) from ``pmic_read_adc`` output."""
    rails: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        match = _READING.match(line)
        if not match:
            continue
        rail, suffix, _kind, value, unit = match.groups()
        if suffix != unit:
            continue  # "X_A volt(..)=..V" would be a malformed line: skip it
        rails.setdefault(rail, {})[suffix] = float(value)
    return rails


def rails_power_w(rails: dict[str, dict[str, float]]) -> tuple[float, list[str], list[str]]:
    """Sum of V*I over rails with both readings; (watts, paired rails, unpaired rails)."""
    paired = sorted(r for r, v in rails.items() if "A" in v and "V" in v)
    unpaired = sorted(r for r in rails if r not in paired)
    return sum(rails[r]["A"] * rails[r]["V"] for r in paired), paired, unpaired


@METERS.register("rpi5-pmic", aliases=("rpi5",))
class Rpi5PmicReader(PowerReader):
    meter = "rpi5-pmic"
    scope = SCOPE

    def __init__(self, options: MeterOptions):
        super().__init__(options)
        self._sampler: Sampler | None = None
        self.paired: list[str] = []
        self.unpaired: list[str] = []

    def _run_command(self) -> str:
        try:
            done = subprocess.run(list(self.options.vcgencmd_cmd), capture_output=True, text=True,
                                  timeout=5, check=False)
        except subprocess.TimeoutExpired as exc:
            raise OSError(f"'{' '.join(self.options.vcgencmd_cmd)}' timed out") from exc
        if done.returncode != 0:
            raise OSError(f"'{' '.join(self.options.vcgencmd_cmd)}' exited {done.returncode}: "
                          f"{done.stderr.strip()}")
        return done.stdout

    def watts(self) -> float:
        watts, self.paired, self.unpaired = rails_power_w(parse_pmic_read_adc(self._run_command()))
        if not self.paired:
            raise ValueError("no rail with both a current and a voltage reading")
        return watts

    def available(self) -> tuple[bool, str]:
        exe = self.options.vcgencmd_cmd[0]
        if shutil.which(exe) is None:
            return False, f"'{exe}' not found on PATH: not a Raspberry Pi (or raspi-utils not installed)"
        try:
            self.watts()
        except (OSError, ValueError) as exc:
            return False, (f"'{' '.join(self.options.vcgencmd_cmd)}' gave no PMIC power ({exc}); "
                           "pmic_read_adc exists on the Raspberry Pi 5 only")
        return True, f"{len(self.paired)} PMIC rails from '{' '.join(self.options.vcgencmd_cmd)}'"

    def start(self) -> None:
        interval = max(MIN_INTERVAL_S, self.options.interval_s)
        self._sampler = Sampler(self.watts, interval)
        self._sampler.start()
        self.notes = [f"{SCOPE}; {len(self.paired)} rails paired, unpaired (no V*I): "
                      f"{', '.join(self.unpaired) or 'none'}; sampled every {interval:g} s"]

    def stop(self) -> float:
        assert self._sampler is not None, "stop() before start()"
        joules = self._sampler.stop()
        self.samples = self._sampler.count
        self.window_s = self._sampler.t1 - self._sampler.t0
        return joules
