"""Sensor hub: per-modality ring buffers of the last T frames, health and quality per modality.

TORCH-FREE (numpy only). Every buffer is preallocated when the hub is built;
``push`` copies the frame into place and never allocates a frame-sized
array. Each ring holds ``2 T`` slots and every frame is written twice (at
``i`` and ``i + T``), so the last ``T`` frames in time order are always one
contiguous view: building a model window costs no copy.

Health of a modality at time ``now``:

- *available*: the ring holds ``T`` good frames and the newest is no older than
  the staleness budget (a dead sensor delivers nothing, so it goes stale);
- *quality* in [0, 1]: image luminance x contrast (dark or foggy images score
  low), radar peak-over-floor SNR, LiDAR share of valid returns; the mean over
  the last few frames, so a single noisy frame does not move a decision;
- a frame with NaN/inf in any channel, of the wrong shape, or (given the range
  calibration saw) in the wrong scale is rejected and counted; the modality is
  unhealthy until the next good frame arrives (never a crash);
- timestamps: a NaN/inf one is refused; a duplicate or slightly earlier one is
  refused (counted, the window stays good); a jump back or forward by more than
  the staleness limit (a clock reset, a sensor that stopped) starts a fresh
  window, so no window spans such a gap.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

import numpy as np

from edgekd.device.runtime.runner import QuantSpec

# Stored radar maps are (log2(1 + |x|) - offset) / scale (edgekd.host.data.radar.normalise_maps); one unit of the
# map is `scale` octaves of amplitude, i.e. 20 log10(2) * scale dB.
RADAR_DB_PER_UNIT = 20.0 * math.log10(2.0) * 10.0
# A frame is in the wrong scale when it reaches this many calibration spans beyond the range calibration
# saw: real data exceeds a calibration set's range a little (LiDAR returns up to 2.7 spans past it on the
# simulator's drive), a float image in 0..255 (254 spans) or LiDAR in metres instead of m/10 (26) by far.
RANGE_MARGIN = 4.0


@dataclasses.dataclass(frozen=True)
class QualityConfig:
    """Where each quality signal saturates (calibrated on the synthetic scenario's sensors).

    On the default scene the mean image luminance is about 0.50 by day, 0.26 at
    dusk and 0.07 at night; RMS contrast about 0.24 clear, 0.16 in rain or fog.
    """

    image_luminance_ok: float = 0.35     # luminance at which the image is bright enough
    image_contrast_ok: float = 0.20      # RMS contrast at which the image is sharp enough
    radar_snr_ok_db: float = 12.0        # peak over mean of the range-angle map
    lidar_valid_ok: float = 0.5          # share of azimuth bins with a return
    smoothing_frames: int = 4            # quality = mean over the last N good frames
    day_luminance: float = 0.37          # lighting thresholds on mean luminance (day | dusk)
    night_luminance: float = 0.16        # (dusk | night)
    luminance_band: float = 0.04         # hysteresis half-band around each lighting threshold


def image_quality(frame: np.ndarray, cfg: QualityConfig) -> tuple[float, float]:
    """``(quality, luminance)`` of one image frame in [0, 1]."""
    flat = frame.reshape(-1)
    n = flat.size
    luminance = float(flat.sum()) / n
    # RMS contrast from one dot product (no temporaries, unlike ndarray.std)
    contrast = math.sqrt(max(0.0, float(np.dot(flat, flat)) / n - luminance * luminance))
    quality = min(1.0, luminance / cfg.image_luminance_ok) * min(1.0, contrast / cfg.image_contrast_ok)
    return quality, luminance


def radar_quality(frame: np.ndarray, cfg: QualityConfig) -> tuple[float, float]:
    """``(quality, snr_db)``: the strongest cell of the range-angle map over its mean (the noise floor)."""
    range_angle = frame[0] if frame.ndim == 3 else frame
    if frame.ndim == 3 and not math.isfinite(float(frame[1:].sum())):
        return math.nan, math.nan   # NaN/inf in another channel (Doppler-angle) than the one scored
    # sum / size, not ndarray.mean: its Python-level wrapper costs more than the sum itself here
    snr_db = (float(range_angle.max()) - float(range_angle.sum()) / range_angle.size) * RADAR_DB_PER_UNIT
    return min(1.0, max(0.0, snr_db / cfg.radar_snr_ok_db)), snr_db


def lidar_quality(frame: np.ndarray, cfg: QualityConfig) -> tuple[float, float]:
    """``(quality, valid_share)``: the share of azimuth bins holding a return (0 = none)."""
    if not math.isfinite(float(frame.sum())):
        return math.nan, math.nan
    share = float(np.count_nonzero(frame > 0)) / frame.size
    return min(1.0, share / cfg.lidar_valid_ok), share


def neutral_quality(frame: np.ndarray, cfg: QualityConfig) -> tuple[float, float]:
    total = float(frame.sum())  # NaN/inf propagate: the hub rejects such a frame
    return (1.0, 1.0) if math.isfinite(total) else (math.nan, math.nan)


# Each returns NaN when any value of the frame (any channel) is NaN/inf: the hub's finiteness check.
QUALITY_FUNCTIONS: dict[str, Callable[[np.ndarray, QualityConfig], tuple[float, float]]] = {
    "image": image_quality,
    "radar": radar_quality,
    "lidar": lidar_quality,
    "gps": neutral_quality,
}


@dataclasses.dataclass
class Health:
    """One modality's state at a given time (what the policy reads)."""

    available: bool
    quality: float
    signal: float            # the raw quality signal: luminance, SNR in dB, valid share
    age_s: float             # age of the newest good frame (inf when none)
    reason: str              # why unavailable ('' when available)


class ModalityBuffer:
    """The last ``window`` frames of one modality, with timestamps and per-frame quality.

    ``value_range`` (lo, hi): the range calibration saw for this input (see :func:`input_ranges`);
    a frame reaching a span beyond it is in the wrong scale (a float image in 0..255, LiDAR at
    1e30) and is rejected rather than saturated into a confident wrong prediction.

    ``quantized``: the int8 input quantisation of the students that read this modality. Each accepted
    frame is then also quantised once into an integer ring of the same layout, so a full-int8 student's
    window costs no per-call quantisation (a T-frame window is otherwise quantised T times over its
    life; the affine map is per element, so both give the same integers).
    """

    def __init__(self, name: str, frame_shape: tuple[int, ...], window: int, cfg: QualityConfig,
                 value_range: tuple[float, float] | None = None, quantized: QuantSpec | None = None):
        self.name = name
        self.frame_shape = tuple(int(s) for s in frame_shape)
        self.window = int(window)
        self.cfg = cfg
        self.value_range = value_range
        # 2T ring slots: every frame is written twice, so windows are contiguous views
        self._frames = np.zeros((2 * self.window, *self.frame_shape), dtype=np.float32)
        # plain lists: a mean over 4 Python floats is cheaper than a numpy call per frame
        self._quality = [0.0] * max(1, cfg.smoothing_frames)
        self._signal = [0.0] * max(1, cfg.smoothing_frames)
        self._quality_fn = QUALITY_FUNCTIONS.get(name, neutral_quality)
        self._scale_uint8 = np.float32(1.0 / 255.0) if name == "image" else None
        # a camera frame's x / 255 lies in [0, 1]: finite, and in range whenever calibration's range admits [0, 1]
        self._uint8_in_range = self._scale_uint8 is not None and (
            value_range is None or self._range_problem(0.0, 1.0, value_range) == "")
        self.quantized = quantized
        if quantized is not None:
            self._qframes = np.zeros((2 * self.window, *self.frame_shape), dtype=quantized.dtype)
            self._qscratch = np.empty(self.frame_shape, np.float32)
            self._qbounds = quantized.bounds(self.frame_shape)
            # x / 255 quantised with scale 1/255 and zero point -128 is x - 128: the uint8's top bit flipped
            self._flip_uint8 = (self._scale_uint8 is not None and quantized.dtype == np.int8
                                and quantized.scale == np.float32(1.0 / 255.0) and quantized.zero_point == -128)
        self.reset()

    def reset(self) -> None:
        self.clear()
        self.rejected = 0            # frames refused (NaN/inf, wrong shape or scale, bad timestamp)
        self.received = 0
        self.restarts = 0            # windows restarted by a gap or a clock jump

    def clear(self) -> None:
        """Drop the buffered frames and their times (a new track), keeping the counters and quality history."""
        self.count = 0               # good frames in the current window run (saturates meaning once >= window)
        self.head = 0                # slot of the next write (0 .. window-1)
        self.last_good_s = -math.inf
        self.last_bad_s = -math.inf
        self.last_bad_reason = ""
        self.bad = False             # the newest frame was refused: unhealthy until the next good one

    def push(self, frame: np.ndarray, timestamp: float, *, max_gap_s: float = math.inf) -> bool:
        """Store a frame; returns False (and counts it) when it is malformed or out of order.

        A frame more than ``max_gap_s`` after the previous one (a sensor that stopped) or before it
        (a clock reset) starts a fresh window: no window spans a gap longer than the staleness limit.
        A duplicate or slightly earlier timestamp is refused without marking the sensor unhealthy.
        """
        self.received += 1
        try:
            t = float(timestamp)
        except (TypeError, ValueError):
            return self._reject(math.nan, f"timestamp {timestamp!r} is not a number")
        if not math.isfinite(t):
            return self._reject(t, f"timestamp {t} is not finite")
        try:
            frame = np.asarray(frame)
        except (TypeError, ValueError) as exc:
            return self._reject(t, f"not an array ({exc})")
        if frame.shape != self.frame_shape:
            if frame.size == int(np.prod(self.frame_shape)) and frame.squeeze().shape == \
                    tuple(s for s in self.frame_shape if s != 1):
                frame = frame.reshape(self.frame_shape)
            else:
                return self._reject(t, f"wrong shape {frame.shape}, expected {self.frame_shape}")
        if frame.dtype.kind not in "fiub":
            return self._reject(t, f"unsupported dtype {frame.dtype}")
        if self.count and t <= self.last_good_s and self.last_good_s - t <= max_gap_s:
            return self._reject(t, f"timestamp {t:.3f} s not after the previous frame's {self.last_good_s:.3f} s "
                                   "(duplicate or out of order)", unhealthy=False)
        # Slot head + T lies outside the current window view [head, head + T): fill and check the new
        # frame there, so a rejected frame never touches the window (the next push reuses the slot).
        slot = self._frames[self.head + self.window]
        scale_uint8 = self._scale_uint8
        raw_uint8 = frame if frame.dtype == np.uint8 and scale_uint8 is not None else None
        if scale_uint8 is not None and raw_uint8 is not None:
            np.multiply(frame, scale_uint8, out=slot)  # stored camera frames: x / 255
        elif frame.dtype.itemsize > 4:  # only a float64 (or int64) frame can overflow float32
            with np.errstate(over="ignore", invalid="ignore"):
                np.copyto(slot, frame, casting="unsafe")
        else:
            np.copyto(slot, frame, casting="unsafe")
        problem = "" if raw_uint8 is not None and self._uint8_in_range else self._value_problem(slot)
        if problem:
            return self._reject(t, problem)
        quality, signal = self._quality_fn(slot, self.cfg)
        if not (math.isfinite(quality) and math.isfinite(signal)):
            return self._reject(t, "NaN or inf values")
        if self.count and abs(t - self.last_good_s) > max_gap_s:
            self._restart(slot)      # the gap (or clock jump) ends the old window
        return self._store(slot, t, quality, signal, raw_uint8)

    def _value_problem(self, slot: np.ndarray) -> str:
        """Why the frame's values cannot be used ('' when they can): non-finite in any channel, or wrong scale."""
        if self.value_range is None:
            return ""   # every quality function reduces over every channel: NaN/inf show up in its result
        lo, hi = float(slot.min()), float(slot.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return "NaN or inf values"
        return self._range_problem(lo, hi, self.value_range)

    @staticmethod
    def _range_problem(lo: float, hi: float, value_range: tuple[float, float]) -> str:
        cal_lo, cal_hi = value_range
        margin = RANGE_MARGIN * max(cal_hi - cal_lo, 1e-6)
        if lo < cal_lo - margin or hi > cal_hi + margin:
            return (f"values in [{lo:.4g}, {hi:.4g}] far outside the range calibration saw "
                    f"[{cal_lo:.4g}, {cal_hi:.4g}] (wrong scale or units?)")
        return ""

    def _restart(self, slot: np.ndarray) -> None:
        staged = slot.copy()          # clear() moves head: keep the new frame
        self.clear()
        self.restarts += 1
        self._frames[self.head + self.window] = staged

    def _store(self, slot: np.ndarray, t: float, quality: float, signal: float,
               raw_uint8: np.ndarray | None = None) -> bool:
        slot = self._frames[self.head + self.window]
        self._frames[self.head] = slot
        if self.quantized is not None:
            self._quantize(slot, raw_uint8)
        k = self.count % len(self._quality)
        self._quality[k], self._signal[k] = quality, signal
        self.head = (self.head + 1) % self.window
        self.count += 1
        self.last_good_s = t
        self.bad = False
        return True

    def _quantize(self, slot: np.ndarray, raw_uint8: np.ndarray | None) -> None:
        """Into the integer ring: the camera's uint8 frame (``raw_uint8``) by the top-bit flip where it applies."""
        qslot = self._qframes[self.head + self.window]
        if self._flip_uint8 and raw_uint8 is not None:
            np.bitwise_xor(raw_uint8, np.uint8(0x80), out=qslot.view(np.uint8))
        else:
            self.quantized.quantize_into(slot, self._qscratch, qslot, self._qbounds)  # type: ignore[union-attr]
        self._qframes[self.head] = qslot

    def _reject(self, timestamp: float, reason: str, *, unhealthy: bool = True) -> bool:
        self.rejected += 1
        self.last_bad_s = timestamp
        self.last_bad_reason = reason
        self.bad = self.bad or unhealthy
        return False

    def window_view(self) -> np.ndarray:
        """The last ``window`` frames, oldest first: a view, valid until the next push."""
        return self._frames[self.head:self.head + self.window]

    def quantized_window_view(self) -> np.ndarray:
        """The last ``window`` frames quantised with :attr:`quantized`: oldest first, a view (see window_view)."""
        return self._qframes[self.head:self.head + self.window]

    def health(self, now: float, staleness_s: float) -> Health:
        age = now - self.last_good_s
        n = min(self.count, len(self._quality))
        quality = sum(self._quality[:n]) / n if n else 0.0
        signal = sum(self._signal[:n]) / n if n else math.nan
        if self.bad:
            return Health(False, 0.0, signal, age, f"bad frame ({self.last_bad_reason})")
        if self.count == 0:
            return Health(False, 0.0, signal, age, "no frame yet")
        if not math.isfinite(now):
            return Health(False, quality, signal, age, f"the time asked for ({now}) is not finite")
        if age > staleness_s:
            return Health(False, quality, signal, age, f"stale ({age:.2f} s)")
        if age < -staleness_s:
            return Health(False, quality, signal, age, f"newest frame is {-age:.2f} s in the future of the clock")
        if self.count < self.window:
            return Health(False, quality, signal, age, f"warming up ({self.count}/{self.window} frames)")
        return Health(True, quality, signal, age, "")


def input_ranges(students: Mapping[str, Mapping]) -> dict[str, tuple[float, float]]:
    """Per modality, the range calibration saw: the full-int8 input's representable range.

    A full-int8 model's input scale and zero point are set from the calibration windows, so
    ``[(-128 - zp) * scale, (127 - zp) * scale]`` is that range (a union over the students
    that take the modality). ``students``: a bundle manifest's ``students``.
    """
    ranges: dict[str, tuple[float, float]] = {}
    for student in students.values():
        artifact = (student.get("artifacts") or {}).get("tflite_int8") or {}
        for tensor in artifact.get("inputs") or []:
            quant = tensor.get("quantization") or {}
            scale, zero_point = quant.get("scale"), quant.get("zero_point")
            if not (isinstance(scale, (int, float)) and isinstance(zero_point, int)) or not scale > 0:
                continue
            lo, hi = (-128 - zero_point) * scale, (127 - zero_point) * scale
            old = ranges.get(tensor["name"], (lo, hi))
            ranges[tensor["name"]] = (min(lo, old[0]), max(hi, old[1]))
    return ranges


class SensorHub:
    """One :class:`ModalityBuffer` per modality; ``now`` is the newest good timestamp seen.

    ``ranges`` (modality -> (lo, hi), e.g. :func:`input_ranges` of the bundle) turns on the
    wrong-scale check. Frames more than ``staleness_s`` apart never share a window.
    ``quantized`` (modality -> :class:`QuantSpec`) keeps an integer ring of those modalities too.
    """

    def __init__(self, frame_shapes: Mapping[str, tuple[int, ...]], window: int, *,
                 staleness_s: float, quality: QualityConfig | None = None,
                 ranges: Mapping[str, tuple[float, float]] | None = None,
                 quantized: Mapping[str, QuantSpec] | None = None):
        if not (math.isfinite(float(staleness_s)) and staleness_s > 0):
            raise ValueError(f"staleness_s must be a positive finite number, got {staleness_s!r}")
        self.cfg = quality or QualityConfig()
        self.staleness_s = float(staleness_s)
        self.window = int(window)
        ranges, quantized = ranges or {}, quantized or {}
        self.buffers = {name: ModalityBuffer(name, shape, window, self.cfg, ranges.get(name), quantized.get(name))
                        for name, shape in frame_shapes.items()}
        self.unknown_pushes = 0

    @property
    def now(self) -> float:
        """The newest accepted timestamp (-inf before any): never a NaN, a refused or an unknown frame's."""
        return max((b.last_good_s for b in self.buffers.values()), default=-math.inf)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.buffers)

    def push(self, modality: str, frame: np.ndarray, timestamp: float) -> bool:
        """Store one frame; False when the hub does not know the modality or the frame is refused."""
        buffer = self.buffers.get(modality)
        if buffer is None:
            self.unknown_pushes += 1
            return False
        return buffer.push(frame, timestamp, max_gap_s=self.staleness_s)

    def health(self, now: float | None = None) -> dict[str, Health]:
        at = self.now if now is None else float(now)
        return {name: buffer.health(at, self.staleness_s) for name, buffer in self.buffers.items()}

    def window_of(self, modality: str) -> np.ndarray:
        return self.buffers[modality].window_view()

    def quantized_window_of(self, modality: str) -> np.ndarray:
        return self.buffers[modality].quantized_window_view()

    def quantization_of(self, modality: str) -> QuantSpec | None:
        """The integer ring's quantisation of ``modality`` (None: the hub keeps only float frames of it)."""
        buffer = self.buffers.get(modality)
        return None if buffer is None else buffer.quantized

    def counters(self) -> dict[str, dict[str, int]]:
        return {name: {"received": b.received, "rejected": b.rejected} for name, b in self.buffers.items()}

    def reset(self) -> None:
        for buffer in self.buffers.values():
            buffer.reset()

    def new_track(self) -> None:
        """A new user or pass: every window starts empty (no window may mix two tracks)."""
        for buffer in self.buffers.values():
            buffer.clear()
