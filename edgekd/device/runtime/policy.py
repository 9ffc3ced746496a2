"""Modality policy: which student the sensors can feed, frame by frame, without flapping.

TORCH-FREE (standard library only). Pure state machine; the engine gives it
the hub's health and asks for a decision.

1. Lighting is inferred from the camera (mean luminance), never read from
   ground truth, with a hysteresis band around each threshold and a
   confirmation of ``min_dwell_frames`` frames before it changes. While the
   camera is out, the last estimate holds.
2. The target profile lists students per lighting in order of preference.
   A student is *feedable* when every modality it needs is available; it is
   *good* when its quality (the minimum over its modalities) clears
   ``min_quality`` — by ``quality_margin`` for a student that is not active,
   less ``quality_margin`` for the active one (hysteresis).
3. The wanted student is the first good one in the order (else the feedable
   one of best quality: a degraded choice beats no prediction). A switch to
   it waits until the active student has run ``min_dwell_frames`` frames,
   unless the active one can no longer be fed (then it is immediate).
4. While no student can be fed (all sensors out, or a new track's windows
   filling) there is no prediction, and the active student stays chosen.
5. When an inference fails, :meth:`ModalityPolicy.fallback` moves to the next
   feedable student at once and benches the failed one for a while.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from edgekd.device.contracts import LIGHTING
from edgekd.device.runtime.hub import Health, QualityConfig


@dataclasses.dataclass(frozen=True)
class PolicySettings:
    """The profile's ``policy`` block plus the runtime's own knobs."""

    order: Mapping[str, tuple[str, ...]]       # lighting -> students in order of preference
    quality_margin: float = 0.1
    min_dwell_frames: int = 10
    min_quality: float = 0.4                   # below this a student is only a last resort
    failure_cooldown_frames: int = 50          # frames a student whose inference failed is skipped
    fixed: str | None = None                   # 'image' for the single-student baseline (no switching)

    @classmethod
    def from_profile(cls, policy, *, fixed: str | None = None, **overrides) -> PolicySettings:
        """From an ``edgekd.device.targets.Policy`` (or any object with day/dusk/night and the knobs)."""
        return cls(order={name: tuple(getattr(policy, name)) for name in LIGHTING},
                   quality_margin=float(policy.quality_margin), min_dwell_frames=int(policy.min_dwell_frames),
                   fixed=fixed, **overrides)


@dataclasses.dataclass(frozen=True)
class Decision:
    student: str | None       # None: no student can be fed this frame
    reason: str
    lighting: str             # inferred lighting
    switched: bool = False


class LightingEstimator:
    """Day / dusk / night from mean image luminance, with hysteresis and confirmation."""

    def __init__(self, cfg: QualityConfig, confirm_frames: int):
        self.cfg = cfg
        self.confirm_frames = max(1, int(confirm_frames))
        self.reset()

    def reset(self) -> None:
        self.lighting: str | None = None
        self._candidate: str | None = None
        self._streak = 0

    def classify(self, luminance: float, current: str | None) -> str:
        """The lighting class of ``luminance``; around a threshold the current class wins."""
        cfg, band = self.cfg, self.cfg.luminance_band
        if current is None:
            band = 0.0
        day_cut = cfg.day_luminance + (band if current != "day" else -band)
        night_cut = cfg.night_luminance - (band if current != "night" else -band)
        if luminance >= day_cut:
            return "day"
        if luminance < night_cut:
            return "night"
        return "dusk"

    def update(self, luminance: float | None) -> str:
        if luminance is None or luminance != luminance:  # camera out (None or NaN): hold
            return self.lighting or "day"
        seen = self.classify(luminance, self.lighting)
        if self.lighting is None:
            self.lighting = seen
        elif seen == self.lighting:
            self._candidate, self._streak = None, 0
        elif seen == self._candidate:
            self._streak += 1
            if self._streak >= self.confirm_frames:
                self.lighting, self._candidate, self._streak = seen, None, 0
        else:
            self._candidate, self._streak = seen, 1
            if self.confirm_frames <= 1:
                self.lighting, self._candidate, self._streak = seen, None, 0
        return self.lighting


class ModalityPolicy:
    """Chooses the active student each frame (see the module doc)."""

    def __init__(self, settings: PolicySettings, students: Mapping[str, Sequence[str]],
                 quality: QualityConfig | None = None):
        self.settings = settings
        self.students = {name: tuple(mods) for name, mods in students.items()}
        if settings.fixed is not None and settings.fixed not in self.students:
            from edgekd.device.errors import EdgekdError

            raise EdgekdError(f"fixed policy names student '{settings.fixed}', which the bundle lacks",
                              field="policy", fix=f"students in this bundle: {', '.join(self.students)}")
        self.lighting = LightingEstimator(quality or QualityConfig(), settings.min_dwell_frames)
        # per lighting: the profile's order restricted to this bundle, then the others as last resorts
        self._orders = {}
        for name in LIGHTING:
            listed = [s for s in settings.order.get(name, ()) if s in self.students]
            self._orders[name] = tuple(listed + [s for s in self.students if s not in listed])
        self.reset()

    def reset(self) -> None:
        self.active: str | None = None
        self.frames_on_active = 0
        self.switches = 0
        self._benched: dict[str, int] = {}
        self.lighting.reset()

    # ------------------------------------------------------------------ per frame

    def decide(self, health: Mapping[str, Health]) -> Decision:
        image = health.get("image")
        lighting = self.lighting.update(image.signal if image is not None and image.available else None)
        self._tick_bench()
        if self.settings.fixed is not None:
            return self._decide_fixed(health, lighting)
        order = self._orders[lighting]
        feedable = {s: self._quality(s, health) for s in order if self._feedable(s, health)}
        if not feedable:
            # The last choice holds through a gap (a new track's warm-up, a total outage), so the same
            # hysteresis applies when the sensors are back instead of a fresh start.
            return Decision(None, self._nothing_reason(health), lighting)
        wanted, why = self._wanted(order, feedable, lighting)
        active = self.active
        if active is None or active not in feedable:
            lost = "start" if active is None else f"{active} cannot be fed ({self._why_not(active, health)})"
            return self._set(wanted, f"{why}; {lost}", lighting)
        if wanted == active:
            self.frames_on_active += 1
            return Decision(active, why, lighting)
        if self.frames_on_active < self.settings.min_dwell_frames:
            self.frames_on_active += 1
            return Decision(active, f"dwell on {active} ({self.frames_on_active}/"
                                    f"{self.settings.min_dwell_frames}) before {wanted}", lighting)
        return self._set(wanted, why, lighting)

    def fallback(self, failed: str, health: Mapping[str, Health], error: str) -> Decision:
        """The inference of ``failed`` failed this frame: bench it and move to the next feedable student."""
        self._benched[failed] = self.settings.failure_cooldown_frames
        lighting = self.lighting.lighting or "day"
        if self.settings.fixed is not None:
            return self._set(None, f"fixed:{failed} inference failed ({error}); no fallback in fixed mode",
                             lighting)
        order = self._orders[lighting]
        feedable = {s: self._quality(s, health) for s in order if self._feedable(s, health)}
        if not feedable:
            return self._set(None, f"{failed} inference failed ({error}); no other student can be fed", lighting)
        wanted, why = self._wanted(order, feedable, lighting)
        return self._set(wanted, f"fallback: {failed} inference failed ({error}); {why}", lighting)

    # ------------------------------------------------------------------ helpers

    def _decide_fixed(self, health: Mapping[str, Health], lighting: str) -> Decision:
        student = self.settings.fixed
        assert student is not None  # only called for a fixed policy
        if self._feedable(student, health):
            if self.active == student:
                self.frames_on_active += 1
                return Decision(student, f"fixed:{student}", lighting)
            return self._set(student, f"fixed:{student}", lighting)
        return self._set(None, f"fixed:{student} cannot be fed ({self._why_not(student, health)})", lighting)

    def _wanted(self, order: Sequence[str], feedable: Mapping[str, float], lighting: str) -> tuple[str, str]:
        margin = self.settings.quality_margin
        for rank, student in enumerate(order):
            if student not in feedable:
                continue
            needed = self.settings.min_quality + (-margin if student == self.active else margin)
            if feedable[student] >= needed:
                if rank == 0:
                    return student, f"{lighting}: {student} preferred"
                return student, f"{lighting}: {student} (better ones unfed or low quality)"
        best = max(feedable, key=lambda s: (feedable[s], -order.index(s)))
        return best, f"{lighting}: degraded, every feedable student below quality {self.settings.min_quality}"

    def _set(self, student: str | None, reason: str, lighting: str) -> Decision:
        switched = student != self.active and student is not None and self.active is not None
        if switched:
            self.switches += 1
        if student != self.active:
            self.frames_on_active = 0
        self.active = student
        if student is not None:
            self.frames_on_active += 1
        return Decision(student, reason, lighting, switched)

    def _feedable(self, student: str, health: Mapping[str, Health]) -> bool:
        if self._benched.get(student, 0) > 0:
            return False
        for modality in self.students[student]:
            h = health.get(modality)
            if h is None or not h.available:
                return False
        return True

    def _quality(self, student: str, health: Mapping[str, Health]) -> float:
        return min(health[m].quality for m in self.students[student])

    def _why_not(self, student: str, health: Mapping[str, Health]) -> str:
        if self._benched.get(student, 0) > 0:
            return "benched after a failed inference"
        parts = []
        for modality in self.students[student]:
            h = health.get(modality)
            if h is None:
                parts.append(f"{modality} has no sensor")
            elif not h.available:
                parts.append(f"{modality} {h.reason}")
        return ", ".join(parts) or "unknown"

    def _nothing_reason(self, health: Mapping[str, Health]) -> str:
        parts = [f"{name}: {h.reason}" for name, h in health.items() if not h.available]
        benched = [s for s, n in self._benched.items() if n > 0]
        if benched:
            parts.append("benched: " + ", ".join(benched))
        return "no student can be fed (" + "; ".join(parts) + ")"

    def _tick_bench(self) -> None:
        if self._benched:
            for student in list(self._benched):
                self._benched[student] -= 1
                if self._benched[student] <= 0:
                    del self._benched[student]
