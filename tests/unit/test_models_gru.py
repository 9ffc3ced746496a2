"""UnrolledGRU: numerically equal to nn.GRU, loads its weights, pads future steps correctly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgekd.host.models import UnrolledGRU

torch.set_num_threads(1)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("batch", [1, 5])
def test_matches_nn_gru(layers: int, batch: int) -> None:
    torch.manual_seed(layers * 10 + batch)
    gru = nn.GRU(12, 16, num_layers=layers, batch_first=True)
    unrolled = UnrolledGRU(12, 16, num_layers=layers).load_from_gru(gru)
    x = torch.randn(batch, 7, 12)
    ref_out, ref_h = gru(x)
    out, last = unrolled(x)
    assert out.shape == (batch, 7, 16)
    assert torch.max(torch.abs(out - ref_out)) < 1e-5
    assert torch.max(torch.abs(last - ref_h[-1])) < 1e-5


@pytest.mark.parametrize("layers", [1, 2])
def test_future_steps_equal_zero_padding(layers: int) -> None:
    torch.manual_seed(1)
    gru = nn.GRU(8, 10, num_layers=layers, batch_first=True)
    unrolled = UnrolledGRU(8, 10, num_layers=layers).load_from_gru(gru)
    x = torch.randn(3, 8, 8)
    ref, _ = gru(torch.cat([x, torch.zeros(3, 3, 8)], dim=1))
    out, last = unrolled(x, future_steps=3, keep_last=4)
    assert out.shape == (3, 4, 10)
    assert torch.max(torch.abs(out - ref[:, -4:])) < 1e-5
    assert torch.max(torch.abs(last - ref[:, -1])) < 1e-5


def test_future_input_is_the_padded_frame() -> None:
    torch.manual_seed(2)
    gru = nn.GRU(6, 9, batch_first=True)
    unrolled = UnrolledGRU(6, 9).load_from_gru(gru)
    x, pad = torch.randn(2, 5, 6), torch.randn(6)
    ref, _ = gru(torch.cat([x, pad.expand(2, 3, 6)], dim=1))
    out, _ = unrolled(x, future_steps=3, future_input=pad)
    assert torch.max(torch.abs(out - ref)) < 1e-5


def test_state_dict_keys_and_round_trip() -> None:
    gru = nn.GRU(4, 5, num_layers=2, batch_first=True)
    unrolled = UnrolledGRU(4, 5, num_layers=2)
    assert set(unrolled.state_dict()) == set(gru.state_dict())
    unrolled.load_state_dict(gru.state_dict())
    back = unrolled.to_gru()
    x = torch.randn(2, 3, 4)
    assert torch.allclose(back(x)[0], gru(x)[0])


def test_gradients_match_nn_gru() -> None:
    torch.manual_seed(3)
    gru = nn.GRU(5, 7, batch_first=True)
    unrolled = UnrolledGRU(5, 7).load_from_gru(gru)
    x = torch.randn(4, 6, 5)
    gru(x)[0].square().sum().backward()
    unrolled(x)[0].square().sum().backward()
    for name, param in unrolled.named_parameters():
        assert torch.allclose(param.grad, getattr(gru, name).grad, atol=1e-5), name


def test_load_rejects_other_sizes() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        UnrolledGRU(4, 5).load_from_gru(nn.GRU(4, 6))
    with pytest.raises(ValueError, match="unidirectional"):
        UnrolledGRU(4, 5).load_from_gru(nn.GRU(4, 5, bidirectional=True))


def test_folded_gate_biases_stay_exact_with_large_biases() -> None:
    # b_hr and b_hz move into the input projection; b_hn must not (nn.GRU scales it by r). Large,
    # distinct biases make a wrong fold visible far above float noise.
    torch.manual_seed(4)
    gru = nn.GRU(5, 6, num_layers=2, batch_first=True)
    with torch.no_grad():
        for name, param in gru.named_parameters():
            if name.startswith("bias"):
                param.copy_(torch.linspace(-2.0, 2.0, param.numel()))
    unrolled = UnrolledGRU(5, 6, num_layers=2).load_from_gru(gru)
    x = torch.randn(3, 4, 5)
    ref, _ = gru(torch.cat([x, torch.zeros(3, 2, 5)], dim=1))
    out, last = unrolled(x, future_steps=2)
    assert torch.max(torch.abs(out - ref)) < 1e-5
    assert torch.max(torch.abs(last - ref[:, -1])) < 1e-5
