"""The model registry and the interface every beam-tracking model offers.

``create_model(name, **kwargs)`` builds a registered model, rejects unknown
kwargs (listing the accepted ones) and records ``registry_name`` and
``registry_kwargs`` on the module so that a checkpoint can rebuild it.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import torch
from torch import Tensor, nn

from edgekd.device.errors import EdgekdError
from edgekd.device.registry import Registry

MODELS: Registry[Callable[..., BeamModel]] = Registry("model")

M = TypeVar("M")

#: modality -> how ``example_inputs`` draws a plausible value (see docs/CONTRACTS.md)
_EXAMPLE_DRAW = {
    "image": lambda shape, gen: torch.rand(shape, generator=gen),
    "radar": lambda shape, gen: torch.rand(shape, generator=gen),
    "lidar": lambda shape, gen: torch.rand(shape, generator=gen),
    "gps": lambda shape, gen: 0.5 * torch.randn(shape, generator=gen),
}


def register_model(name: str) -> Callable[[M], M]:
    """Class (or factory) decorator: make ``name`` available to ``create_model``."""
    return cast("Callable[[M], M]", MODELS.register(name))  # the class itself is returned, typed as it is


def list_models() -> list[str]:
    return MODELS.names()


def model_arguments(name: str) -> dict[str, object]:
    """The keyword arguments a registered model accepts, with their defaults."""
    factory = MODELS.get(name)
    target = factory.__init__ if inspect.isclass(factory) else factory
    params = list(inspect.signature(target).parameters.values())
    return {p.name: p.default for p in params
            if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def create_model(name: str, **kwargs) -> BeamModel:
    """Build the registered model ``name``; unknown kwargs are an error naming them."""
    key = MODELS.resolve(name)
    accepted = model_arguments(key)
    for arg in kwargs:
        if arg not in accepted:
            raise EdgekdError(f"model '{key}' has no argument '{arg}'", field=arg,
                              fix=f"accepted arguments: {', '.join(sorted(accepted))}")
    try:
        recorded = json.loads(json.dumps(kwargs))  # tuples become lists, as they come back from JSON
    except (TypeError, ValueError):
        raise EdgekdError(f"arguments of model '{key}' must be JSON values (numbers, strings, lists)",
                          fix="pass plain numbers / lists") from None
    model = MODELS.get(key)(**kwargs)
    model.registry_name = key
    model.registry_kwargs = recorded
    return model


def check_int(field: str, value: object, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise EdgekdError(f"'{field}' must be an integer >= {minimum}, got {value!r}", field=field,
                          fix=f"pass {field}=<int >= {minimum}>")
    return int(value)


def check_multiple(field: str, value: object, factor: int, *, why: str) -> int:
    value = check_int(field, value)
    if value % factor:
        raise EdgekdError(f"'{field}' must be a multiple of {factor} ({why}), got {value}", field=field,
                          fix=f"use {field}={max(factor, value // factor * factor)}")
    return value


def check_width(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 8:
        raise EdgekdError(f"'width' must be a number in (0, 8], got {value!r}", field="width",
                          fix="pass width=1.0 (paper) or e.g. 0.5")
    return float(value)


def check_choice(field: str, value: object, choices: Sequence[str]) -> str:
    if value not in choices:
        raise EdgekdError(f"'{field}' must be one of {', '.join(choices)}, got {value!r}", field=field,
                          fix=f"pass {field}={choices[0]!r}")
    return str(value)


def check_optional_int(field: str, value: object, *, minimum: int = 1) -> int | None:
    return None if value is None else check_int(field, value, minimum=minimum)


def check_pair(field: str, value: object, factor: int, *, why: str) -> tuple[int, int]:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise EdgekdError(f"'{field}' must be a pair [rows, cols], got {value!r}", field=field,
                          fix=f"pass {field}=[64, 32]")
    return (check_multiple(f"{field}[0]", value[0], factor, why=why),
            check_multiple(f"{field}[1]", value[1], factor, why=why))


class BeamModel(nn.Module):
    """Base of every model: inputs per modality -> logits [B, horizons, num_beams].

    Subclasses set ``input_modalities`` (the order of ``forward``'s arguments and
    of the ONNX inputs), implement ``forward_features`` and ``input_shapes``.
    """

    input_modalities: tuple[str, ...] = ()
    registry_name: str | None = None
    registry_kwargs: dict = {}

    def __init__(self, *, num_beams: int = 64, window: int = 8, horizons: int = 4):
        super().__init__()
        self.num_beams = check_int("num_beams", num_beams, minimum=2)
        self.window = check_int("window", window)
        self.horizons = check_int("horizons", horizons)

    @property
    def steps(self) -> int:
        """Recurrent steps: the T observed frames plus horizons - 1 padded future frames."""
        return self.window + self.horizons - 1

    # -- interface ------------------------------------------------------------------
    def forward(self, *inputs: Tensor) -> Tensor:
        return self.forward_features(*inputs)["logits"]

    # Subclasses take one named tensor per modality (``image``, ``radar``...); ``*Any`` lets them name them.
    def forward_features(self, *inputs: Any, **kwargs: Any) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def input_shapes(self) -> dict[str, tuple[int, ...]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def example_inputs(self, batch: int = 1, *, seed: int = 0) -> tuple[Tensor, ...]:
        """Deterministic plausible inputs, one tensor per modality in ``input_modalities`` order."""
        gen = torch.Generator().manual_seed(seed)
        shapes = self.input_shapes()
        return tuple(_EXAMPLE_DRAW[m]((batch, *shapes[m]), gen) for m in self.input_modalities)

    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-sample shape of every named feature of ``forward_features`` (batch dimension dropped)."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                feats = self.forward_features(*self.example_inputs(1))
        finally:
            self.train(was_training)
        return {name: tuple(value.shape[1:]) for name, value in feats.items()}

    def inputs_from_batch(self, batch: dict) -> tuple[Tensor, ...]:
        """Pick this model's inputs from a dataset batch dict (``ds.batch(...)``), as float32 tensors."""
        missing = [m for m in self.input_modalities if m not in batch]
        if missing:
            has = sorted(k for k in batch if k not in ("beams", "power"))
            raise EdgekdError(f"model '{self.registry_name or type(self).__name__}' needs modality "
                              f"'{missing[0]}' but the data has {has}",
                              field="modalities", fix="use a dataset that records this modality, or another model")
        return tuple(torch.as_tensor(batch[m], dtype=torch.float32) for m in self.input_modalities)

    def check_inputs(self, inputs: Sequence[Tensor]) -> None:
        """Shape check with a clear message; skipped while tracing (shapes are then static anyway)."""
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return
        names = self.input_modalities
        if len(inputs) != len(names):
            raise EdgekdError(f"{type(self).__name__} takes {len(names)} input(s) {list(names)}, got {len(inputs)}",
                              fix="pass one tensor per modality in this order")
        for name, tensor, in zip(names, inputs):
            expected = self.input_shapes()[name]
            if tuple(tensor.shape[1:]) != expected:
                raise EdgekdError(f"input '{name}' has shape {list(tensor.shape)}, expected [B, "
                                  f"{', '.join(map(str, expected))}]", field=name,
                                  fix="match the model's window / image_size / radar_shape to the data")
