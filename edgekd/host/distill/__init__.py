"""Distillation on the host: losses, KD methods (a registry), the trainer and its Python API.

``train_model`` / ``distill_model`` / ``evaluate_checkpoint`` / ``add_teacher_stats``
are what the CLI and the experiment runner call; ``register_method`` adds a KD
method (``datafree`` registers itself this way). Importing this package pulls
torch: the on-board runtime never imports it.
"""

from edgekd.host.distill.config import TrainConfig, load_train_config, resolve_config
from edgekd.host.distill.methods import (
    KD_METHODS,
    Distiller,
    build_distiller,
    get_method,
    list_methods,
    register_method,
)

__all__ = [
    "KD_METHODS", "Distiller", "TrainConfig", "add_teacher_stats", "build_distiller", "distill_model",
    "evaluate_checkpoint", "get_method", "list_methods", "load_train_config", "register_method",
    "resolve_config", "train_model",
]


def __getattr__(name: str):
    # The API pulls in the trainer (tqdm, data loader): import it on first use.
    if name in ("train_model", "distill_model", "evaluate_checkpoint", "add_teacher_stats"):
        from edgekd.host.distill import api

        return getattr(api, name)
    raise AttributeError(name)
