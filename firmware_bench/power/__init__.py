"""Power meters: one reader per meter, a registry, and ``auto`` selection.

``--power-meter`` takes ``auto``, a registered name (``rapl``, ``ina3221``,
``tegrastats``, ``rpi5-pmic``, ``estimate``) or ``csv:FILE``. ``auto`` tries
the board meters in ``AUTO_ORDER`` and falls back to ``estimate``, recording
why each one was skipped.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edgekd.device.errors import EdgekdError
from firmware_bench.power import csvlog, estimate, ina3221, rapl, rpi5_pmic, tegrastats  # noqa: F401  (register)
from firmware_bench.power.base import (
    ESTIMATED,
    METERS,
    LoopEnergy,
    MeterOptions,
    PowerModel,
    PowerReader,
    integrate_power,
    loop_energy,
)

# Board meters first (a board has at most one of them), the hwmon reader before
# the tegrastats subprocess because it costs less; the estimate last.
AUTO_ORDER = ("ina3221", "tegrastats", "rpi5-pmic", "rapl")

__all__ = ["AUTO_ORDER", "ESTIMATED", "METERS", "LoopEnergy", "MeterOptions", "PowerModel", "PowerReader",
           "choose_reader", "integrate_power", "loop_energy", "parse_meter_spec", "parse_power_model"]


def parse_meter_spec(spec: str) -> tuple[str, Path | None]:
    """``csv:FILE`` -> ("csv", FILE); any other name -> (name, None)."""
    if spec.startswith("csv:"):
        path = spec[len("csv:"):]
        if not path:
            raise EdgekdError("csv meter without a file", field="--power-meter", fix="use csv:PATH/TO/LOG.csv")
        return "csv", Path(path)
    if spec == "csv":
        raise EdgekdError("csv meter without a file", field="--power-meter", fix="use csv:PATH/TO/LOG.csv")
    return spec, None


def check_meter_spec(spec: str) -> tuple[str, Path | None]:
    """:func:`parse_meter_spec`, and a ``csv:FILE`` the user named must exist: a missing log is a typo or a
    meter not started, and must not turn silently into an estimate."""
    name, path = parse_meter_spec(spec)
    if path is not None and not path.is_file():
        raise EdgekdError("the power meter's log file does not exist", file=path, field="--power-meter",
                          fix="start the external meter's logging first (rows of time, watts), check the "
                              "path, or use --power-meter auto")
    return name, path


def parse_power_model(text: str, *, source: str = "--power-model") -> PowerModel:
    """``"idle_w,active_w"`` -> PowerModel."""
    parts = text.split(",")
    try:
        idle, active = (float(p) for p in parts)
        return PowerModel(idle, active, source=source)
    except ValueError as exc:
        raise EdgekdError(f"invalid power model {text!r}: {exc}", field=source,
                          fix="give two numbers in watts: IDLE_W,ACTIVE_W with idle <= active, e.g. 2.7,6.8") from None


def choose_reader(spec: str, options: MeterOptions) -> tuple[PowerReader | None, list[dict[str, str]]]:
    """The reader for ``spec`` (or the first available one for ``auto``) and why others were skipped.

    A named meter that cannot be read falls back to the estimate too, its
    reason recorded (the estimate is labelled, so nothing passes for measured).
    Returns (None, skipped) when nothing is available, not even the estimate
    (no power model): energy is then reported as unavailable, never as 0.
    """
    name, path = check_meter_spec(spec)
    if path is not None:
        options = dataclasses.replace(options, csv_path=path)
    if name == "auto":
        candidates = [*AUTO_ORDER, "estimate"]
    else:
        candidates = list(dict.fromkeys([METERS.resolve(name), "estimate"]))
    skipped: list[dict[str, str]] = []
    for candidate in candidates:
        reader = METERS.get(candidate)(options)
        ok, reason = reader.available()
        if ok:
            return reader, skipped
        skipped.append({"meter": candidate, "reason": reason})
    return None, skipped
