"""The multi-student runtime: sensor hub + modality policy + one interpreter per student.

TORCH-FREE. Embedding API for an access-point process::

    runtime = Runtime.from_bundle("bundle/", "x86-ap")
    runtime.push("image", frame, timestamp)      # whenever a sensor delivers
    runtime.push("radar", frame, timestamp)
    prediction = runtime.predict()                # top-k beams per horizon, or None with the reason
    runtime.new_track()                           # the next user / pass: windows start empty

Every student's artifact is loaded (and its sha256 checked) up front, and the
hub keeps every modality's buffer filled whatever student is active, so a
switch costs no warm-up.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.device.errors import EdgekdError
from edgekd.device.runtime.backends import open_artifact
from edgekd.device.runtime.hub import Health, QualityConfig, SensorHub, input_ranges
from edgekd.device.runtime.policy import ModalityPolicy, PolicySettings
from edgekd.device.runtime.runner import QuantSpec

log = logging.getLogger(__name__)

# Which artifact a backend/precision pair runs, in order of preference.
ARTIFACT_PREFERENCE: dict[tuple[str, str], tuple[str, ...]] = {
    ("ort", "int8"): ("onnx_int8_qdq", "onnx_fp32"),
    ("ort", "fp16"): ("onnx_fp32",),
    ("ort", "fp32"): ("onnx_fp32",),
    ("tflite", "int8"): ("tflite_int8",),
    ("tflite", "fp16"): ("tflite_fp16", "tflite_fp32"),
    ("tflite", "fp32"): ("tflite_fp32",),
}
LATENCY_KEYS = ("push", "policy", "preprocess", "invoke", "postprocess", "total")


@dataclasses.dataclass
class Prediction:
    """One frame's answer. ``beams``/``probs`` are ``[horizons, k]`` (best first) or None."""

    timestamp: float
    student: str | None
    reason: str
    lighting: str
    switched: bool
    beams: np.ndarray | None
    probs: np.ndarray | None
    latency_ms: dict[str, float]
    health: dict[str, Health]

    @property
    def ok(self) -> bool:
        return self.beams is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the replay log's per-frame record)."""
        return {
            "t": round(self.timestamp, 4), "student": self.student, "reason": self.reason,
            "lighting_est": self.lighting, "switched": self.switched,
            "beams": None if self.beams is None else self.beams.tolist(),
            "probs": None if self.probs is None else np.round(self.probs, 4).tolist(),
            "latency_ms": {k: round(v, 4) for k, v in self.latency_ms.items()},
            "health": {m: {"available": h.available, "quality": round(h.quality, 3),
                           **({"why": h.reason} if h.reason else {})} for m, h in self.health.items()},
        }


class StudentRunner:
    """One student: its backend, the backend's shared runner and the modality windows it reads from the hub."""

    def __init__(self, name: str, modalities: Sequence[str], backend, kind: str):
        self.name = name
        self.modalities = tuple(modalities)
        self.kind = kind
        self.failures = 0
        self._windows: dict[str, np.ndarray] = {}
        self.backend = backend

    @property
    def backend(self):
        return self._backend

    @backend.setter
    def backend(self, backend) -> None:
        # the same runner firmware_bench and `bench --compare` time: buffers allocated once, quantised into
        self._backend = backend
        self.runner = backend.runner()
        self._sources: tuple[Any, list] | None = None

    def window_sources(self, hub: SensorHub) -> list[tuple[str, Callable[[str], np.ndarray]]]:
        """Per modality, where its window comes from: the hub's integer ring when it holds the very
        quantisation this runner's input uses (no per-call quantisation), else the float ring."""
        if self._sources is None or self._sources[0] is not hub:
            specs = self.runner.input_quantization()
            self._sources = (hub, [(m, hub.quantized_window_of if specs.get(m) is not None
                                    and specs.get(m) == hub.quantization_of(m) else hub.window_of)
                                   for m in self.modalities])
        return self._sources[1]

    def run(self, hub: SensorHub) -> tuple[np.ndarray, float, float, float]:
        """Logits ``[horizons, beams]`` and the seconds spent in preprocess / invoke / dequantize.

        The logits live in the runner's buffer until the next call of this student.
        """
        runner, windows = self.runner, self._windows
        t0 = time.perf_counter()
        for m, window_of in self.window_sources(hub):
            windows[m] = window_of(m)
        runner.prepare(windows)
        t1 = time.perf_counter()
        runner.invoke()
        t2 = time.perf_counter()
        logits = runner.finish()
        logits = logits.reshape(logits.shape[-2], logits.shape[-1])
        t3 = time.perf_counter()
        return logits, t1 - t0, t2 - t1, t3 - t2


def top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per horizon, the ``k`` most likely beams (best first) and their softmax probabilities."""
    # few numpy calls on a [4, 64] array: each call costs more than the arithmetic
    # (np.take_along_axis alone costs ~15 us here, plain fancy indexing a third of that)
    k = min(k, logits.shape[-1])
    beams = np.argsort(logits, axis=-1)[:, : -k - 1 : -1]   # softmax is monotonic: rank the logits
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    rows = _ROWS[: logits.shape[0]]
    probs = e[rows, beams] / e.sum(axis=-1, keepdims=True)
    return beams, probs


_ROWS = np.arange(64)[:, None]


class Runtime:
    """Sensor hub + policy + students (see the module doc)."""

    def __init__(self, students: Mapping[str, StudentRunner], hub: SensorHub, policy: ModalityPolicy, *,
                 top_k: int = 5, horizons: int = 4, num_beams: int = 64,
                 clock: Callable[[], float] | None = time.monotonic):
        if not students:
            raise EdgekdError("the runtime needs at least one student", fix="export a bundle with a student")
        self.students = dict(students)
        self.hub = hub
        self.policy = policy
        self.top_k = int(top_k)
        self.horizons = horizons
        self.num_beams = num_beams
        # predict() without now= asks this clock: when every sensor stops, time still moves on and the windows
        # go stale. None measures time by the newest pushed timestamp (recorded time: replays, tests).
        self.clock = clock
        self._push_s = 0.0
        self.frames = 0
        self.no_prediction = 0

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_bundle(cls, path: str | os.PathLike, target: Any = None, *, policy: str = "auto",
                    students: Sequence[str] | None = None, kind: str | None = None, threads: int | None = None,
                    top_k: int = 5, quality: QualityConfig | None = None, verify: bool = True,
                    trusted_key: str | os.PathLike | None = None, allow_degraded: bool | None = None,
                    clock: Callable[[], float] | None = time.monotonic, **policy_overrides) -> Runtime:
        """Open bundle ``path`` for ``target`` (name, alias, YAML path, profile; default: the bundle's own).

        ``policy`` is ``auto`` (switch by the profile's policy) or ``fixed:<student>``
        (the single-student baseline). ``kind`` forces one artifact kind
        (default: what the target's backend and precision run). The bundle must be signed with
        ``trusted_key`` (default: the target profile's ``trusted_key``, else ``$EDGEKD_TRUSTED_KEY``).
        ``clock`` is what ``predict()`` without ``now=`` asks (timestamps pushed must be on it;
        ``None``: the newest pushed timestamp). Frames outside the range calibration saw are rejected.
        """
        from edgekd.device.bundle import open_bundle
        from edgekd.device.targets import load_target, profile_from_dict, warn_if_oversubscribed

        requested = None if target is None else load_target(target)   # first: its trusted key guards the open
        if trusted_key is None and requested is not None:
            trusted_key = requested.trusted_key
        bundle = open_bundle(path, verify=verify, trusted_key=trusted_key, allow_degraded=allow_degraded)
        profile = requested if requested is not None else profile_from_dict(bundle.target)
        fixed = _parse_policy(policy)
        warn_if_oversubscribed(threads or profile.threads, profile.name)
        names = list(students) if students else list(bundle.students)
        for name in names:
            bundle.artifact(name, "tflite_int8")  # raises naming the bundle's students
        if fixed is not None and fixed not in names:
            raise EdgekdError(f"--policy fixed:{fixed} names a student the bundle lacks", field="policy",
                              fix=f"students in this bundle: {', '.join(bundle.students)}")
        runners: dict[str, StudentRunner] = {}
        frame_shapes: dict[str, tuple[int, ...]] = {}
        windows = set()
        for name in names:
            entry = bundle.students[name]
            chosen = kind or _artifact_kind(entry["artifacts"], profile, bundle.path, name)
            backend = open_artifact(bundle.path, bundle.artifact(name, chosen), threads=threads or profile.threads,
                                    providers=profile.execution_providers or None)
            runners[name] = StudentRunner(name, entry["modalities"], backend, chosen)
            for modality in entry["modalities"]:
                shape = tuple(entry["input_shapes"][modality])
                windows.add(shape[0])
                if frame_shapes.setdefault(modality, shape[1:]) != shape[1:]:
                    raise EdgekdError(f"students disagree on the {modality} frame shape", file=bundle.path,
                                      field=f"students.{name}.input_shapes", fix="export them from one dataset")
        if len(windows) != 1:
            raise EdgekdError(f"students use different windows {sorted(windows)}", file=bundle.path,
                              field="window", fix="export students trained with one window length")
        first = bundle.students[names[0]]
        settings = PolicySettings.from_profile(profile.policy, fixed=fixed, **policy_overrides)
        hub = SensorHub(frame_shapes, windows.pop(), staleness_s=profile.policy.staleness_s, quality=quality,
                        ranges=input_ranges({n: bundle.students[n] for n in names}),
                        quantized=shared_input_quantization(runners.values()))
        policy_obj = ModalityPolicy(settings, {n: r.modalities for n, r in runners.items()}, quality)
        log.info("runtime: %s", ", ".join(f"{n} ({r.kind})" for n, r in runners.items()))
        return cls(runners, hub, policy_obj, top_k=top_k, horizons=int(first["horizons"]),
                   num_beams=int(first["num_beams"]), clock=clock)

    # ------------------------------------------------------------------ per frame

    def push(self, modality: str, frame: np.ndarray, timestamp: float) -> bool:
        """Hand a sensor frame to the hub; False (counted) when it is malformed or of an unknown sensor."""
        start = time.perf_counter()
        ok = self.hub.push(modality, frame, timestamp)
        self._push_s += time.perf_counter() - start
        return ok

    def predict(self, now: float | None = None) -> Prediction:
        """Choose a student, run it on the buffered windows and return the top-k beams (or why not)."""
        t_start = time.perf_counter()
        if now is not None:
            at = float(now)
        else:
            at = self.hub.now if self.clock is None else float(self.clock())
        health = self.hub.health(at)
        decision = self.policy.decide(health)
        latency = dict.fromkeys(LATENCY_KEYS, 0.0)
        latency["policy"] = time.perf_counter() - t_start
        beams = probs = None
        switched = decision.switched
        while decision.student is not None:
            runner = self.students[decision.student]
            try:
                logits, pre, invoke, dequant = runner.run(self.hub)
                if not math.isfinite(float(logits.sum())):
                    raise FloatingPointError("non-finite logits")
            except Exception as exc:  # an interpreter failure must not stop the runtime: fall back
                runner.failures += 1
                log.warning("inference of %s failed: %s", runner.name, exc)
                t_policy = time.perf_counter()
                decision = self.policy.fallback(runner.name, health, f"{type(exc).__name__}: {exc}"[:120])
                switched = switched or decision.switched
                latency["policy"] += time.perf_counter() - t_policy
                continue
            latency["preprocess"] += pre
            latency["invoke"] += invoke
            t_post = time.perf_counter()
            beams, probs = top_k(logits, self.top_k)
            latency["postprocess"] += dequant + time.perf_counter() - t_post
            break
        latency["push"] = self._push_s
        self._push_s = 0.0
        latency["total"] = time.perf_counter() - t_start + latency["push"]
        self.frames += 1
        if beams is None:
            self.no_prediction += 1
        return Prediction(at, decision.student if beams is not None else None, decision.reason,
                          decision.lighting, switched, beams, probs,
                          {k: v * 1e3 for k, v in latency.items()}, health)

    def new_track(self) -> None:
        """A new track (the next car, or a handover from another base station): drop the buffered frames.

        No student can be fed until a full window of the new track is in (each prediction says so);
        the policy keeps its state, as the conditions did not change.
        """
        self.hub.new_track()

    def reset(self) -> None:
        """Forget every buffered frame and the policy state (a new drive)."""
        self.hub.reset()
        self.policy.reset()
        self._push_s = 0.0

    def describe(self) -> dict[str, Any]:
        return {"students": {n: {"modalities": list(r.modalities), "artifact": r.kind,
                                 "backend": type(r.backend).__name__} for n, r in self.students.items()},
                "window": self.hub.window, "staleness_s": self.hub.staleness_s,
                "policy": dataclasses.asdict(self.policy.settings) if dataclasses.is_dataclass(
                    self.policy.settings) else {}}


def shared_input_quantization(runners: Iterable[StudentRunner]) -> dict[str, QuantSpec]:
    """The modalities whose integer-input students all quantise them alike, with that quantisation.

    The hub quantises each frame of these once, on push; a modality whose int8 students disagree
    (exported from different calibration sets) stays float and each runner quantises its window.
    """
    seen: dict[str, set[QuantSpec]] = {}
    for runner in runners:
        specs = runner.runner.input_quantization()
        for modality in runner.modalities:
            if modality in specs:
                seen.setdefault(modality, set()).add(specs[modality])
    return {modality: specs.pop() for modality, specs in seen.items() if len(specs) == 1}


def _parse_policy(policy: str) -> str | None:
    if policy == "auto":
        return None
    if policy.startswith("fixed:") and len(policy) > len("fixed:"):
        return policy[len("fixed:"):]
    raise EdgekdError(f"unknown policy {policy!r}", field="policy",
                      fix="use auto, or fixed:<student> (e.g. fixed:image) for the single-student baseline")


def _artifact_kind(artifacts: Mapping[str, Any], profile, bundle_path: Path, student: str) -> str:
    for kind in ARTIFACT_PREFERENCE.get((profile.backend, profile.precision), ("tflite_int8",)):
        if kind in artifacts:
            return kind
    if "tflite_int8" in artifacts and profile.backend == "tflite":
        return "tflite_int8"
    raise EdgekdError(f"student '{student}' has no artifact that target {profile.name} runs "
                      f"(backend {profile.backend}, precision {profile.precision}; has {', '.join(artifacts)})",
                      file=bundle_path, fix=f"export the bundle with --target {profile.name}")
