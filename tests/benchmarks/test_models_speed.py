"""Forward pass of each student at batch 1 (default profile, eval, one thread), torch on CPU.

Run: .venv/bin/python -m pytest tests/benchmarks/test_models_speed.py --benchmark-enable
"""

from __future__ import annotations

import pytest
import torch

from edgekd.host.models import create_model

STUDENTS = ["image_student", "fusion_student", "radar_student", "lidar_student", "gps_baseline"]


@pytest.mark.parametrize("name", STUDENTS)
def test_student_forward_batch1(benchmark, name: str) -> None:
    torch.set_num_threads(1)
    model = create_model(name).eval()
    inputs = model.example_inputs(1)

    def forward():
        with torch.inference_mode():
            return model(*inputs)

    logits = benchmark(forward)
    assert logits.shape == (1, 4, 64)


TEACHERS = ["image_teacher", "fusion_teacher", "radar_teacher"]


@pytest.mark.parametrize("name", TEACHERS)
def test_teacher_train_step_batch32(benchmark, name: str) -> None:
    """Forward + backward of a teacher on a batch of 32 at the default profile (what training costs per step)."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = create_model(name).train()
    inputs = model.example_inputs(32)
    target = torch.randint(0, 64, (32 * 4,))

    def step():
        model.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(*inputs).reshape(-1, 64), target)
        loss.backward()
        return loss

    loss = benchmark(step)
    assert torch.isfinite(loss)
