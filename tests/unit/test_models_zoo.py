"""Model zoo: registry contract, paper-scale sizes, shapes, features, horizon handling."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgekd.device.errors import EdgekdError
from edgekd.device.metrics import count_params
from edgekd.host.models import BeamModel, create_model, list_models, model_arguments

torch.set_num_threads(1)

ALL = ["fusion_student", "fusion_teacher", "gps_baseline", "image_student", "image_teacher",
       "lidar_student", "lidar_teacher", "radar_student", "radar_teacher"]
PAPER = {"image_size": 224, "radar_shape": [128, 64]}
SMALL = {"image_size": 32, "radar_shape": [32, 16]}


def build(name: str, profile: dict, **extra) -> BeamModel:
    accepted = model_arguments(name)
    return create_model(name, **{k: v for k, v in profile.items() if k in accepted}, **extra)


def test_registry_lists_the_contract_names() -> None:
    assert list_models() == ALL


def test_create_model_records_name_and_json_kwargs() -> None:
    model = create_model("fusion_student", image_size=32, radar_shape=(32, 16), width=0.5)
    assert model.registry_name == "fusion_student"
    assert model.registry_kwargs == {"image_size": 32, "radar_shape": [32, 16], "width": 0.5}
    again = create_model(model.registry_name, **json.loads(json.dumps(model.registry_kwargs)))
    again.load_state_dict(model.state_dict())  # same architecture from the recorded kwargs


def test_unknown_kwarg_names_it_and_lists_accepted() -> None:
    with pytest.raises(EdgekdError) as err:
        create_model("image_student", image_sise=64)
    assert "image_sise" in str(err.value) and "image_size" in str(err.value) and "width" in str(err.value)
    assert err.value.field == "image_sise"


@pytest.mark.parametrize("kwargs, field", [({"image_size": 50}, "image_size"), ({"width": 0}, "width"),
                                           ({"num_beams": 1}, "num_beams")])
def test_bad_values_are_user_errors(kwargs: dict, field: str) -> None:
    with pytest.raises(EdgekdError) as err:
        create_model("image_teacher", **kwargs)
    assert err.value.field == field


def test_unknown_model_lists_known() -> None:
    with pytest.raises(EdgekdError, match="image_student"):
        create_model("image_studnet")


@pytest.mark.parametrize("name, paper", [("image_teacher", 1.787e6), ("image_student", 0.095e6),
                                         ("fusion_teacher", 2.931e6), ("fusion_student", 0.106e6)])
def test_paper1_param_counts_within_3_percent(name: str, paper: float) -> None:
    params = count_params(build(name, PAPER))
    assert abs(params / paper - 1) < 0.03, params


def test_lidar_param_counts_exact() -> None:
    assert count_params(create_model("lidar_teacher")) == 96_640
    assert count_params(create_model("lidar_student")) == 25_408


@pytest.mark.parametrize("teacher, student", [("image_teacher", "image_student"),
                                              ("fusion_teacher", "fusion_student"),
                                              ("radar_teacher", "radar_student")])
def test_students_at_least_15x_smaller_at_paper_scale(teacher: str, student: str) -> None:
    assert count_params(build(teacher, PAPER)) >= 15 * count_params(build(student, PAPER))


@pytest.mark.parametrize("name", ALL)
def test_forward_shapes_and_features(name: str) -> None:
    model = build(name, SMALL).eval()
    inputs = model.example_inputs(batch=3)
    assert [tuple(x.shape[1:]) for x in inputs] == [model.input_shapes()[m] for m in model.input_modalities]
    with torch.no_grad():
        logits = model(*inputs)
        feats = model.forward_features(*inputs)
    assert logits.shape == (3, 4, 64)
    assert torch.equal(feats["logits"], logits)
    assert feats["embedding"].shape[:2] == (3, 8)
    assert feats["temporal"].shape == (3, 4, feats["last_hidden"].shape[1])
    assert torch.isfinite(logits).all()
    shapes = model.feature_shapes()
    assert {k: tuple(v.shape[1:]) for k, v in feats.items()} == shapes
    assert model.training is False


def test_custom_window_beams_horizons() -> None:
    model = create_model("lidar_student", num_beams=32, window=5, horizons=2)
    assert model(*model.example_inputs(2)).shape == (2, 2, 32)
    assert model.steps == 6


def test_wrong_input_shape_is_a_user_error() -> None:
    model = create_model("image_student", image_size=32)
    with pytest.raises(EdgekdError, match="expected"):
        model(torch.rand(1, 8, 1, 64, 64))
    with pytest.raises(EdgekdError, match="needs modality 'image'"):
        model.inputs_from_batch({"radar": torch.rand(1, 8, 2, 32, 16), "beams": None})


def test_image_student_horizon_handling_matches_nn_gru_on_zero_padded_embeddings() -> None:
    torch.manual_seed(0)
    model = create_model("image_student", image_size=32).eval()
    (image,) = model.example_inputs(2)
    with torch.no_grad():
        feats = model.forward_features(image)
        gru = model.head.gru.to_gru()
        seq, _ = gru(torch.cat([feats["embedding"], torch.zeros(2, 3, 64)], dim=1))  # 8 + 3 = 11 steps
        attended = model.head.attention(seq)[:, -4:]
        logits = model.head.classifier(attended)
    assert seq.shape[1] == 11
    assert torch.max(torch.abs(logits - feats["logits"])) < 1e-5
    assert torch.max(torch.abs(seq[:, -1] - feats["last_hidden"])) < 1e-5


def test_lidar_pads_raw_zero_scans() -> None:
    torch.manual_seed(0)
    model = create_model("lidar_teacher").eval()
    (lidar,) = model.example_inputs(2)
    with torch.no_grad():
        padded = torch.cat([lidar, torch.zeros(2, 3, 216)], dim=1)
        seq, _ = model.head.gru.to_gru()(F.relu(model.embed(padded)))
        logits = model.head.classifier(seq[:, -4:])
        assert torch.max(torch.abs(logits - model(lidar))) < 1e-5


def test_fusion_teacher_uses_plain_multi_head_attention() -> None:
    # Our plain-op attention equals nn.MultiheadAttention with the same weights.
    model = create_model("fusion_teacher", image_size=32, radar_shape=[32, 16]).eval()
    mine = model.head.attention
    ref = nn.MultiheadAttention(64, 8, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(mine.qkv.weight)
        ref.in_proj_bias.copy_(mine.qkv.bias)
        ref.out_proj.weight.copy_(mine.out.weight)
        ref.out_proj.bias.copy_(mine.out.bias)
    ref.eval()
    seq = torch.randn(2, 11, 64)
    with torch.no_grad():
        assert torch.max(torch.abs(mine(seq) - ref(seq, seq, seq)[0])) < 1e-5
    assert not any(isinstance(m, nn.MultiheadAttention) for m in model.modules())


@pytest.mark.parametrize("name", ["image_student", "fusion_teacher", "lidar_student"])
def test_training_step_reaches_every_parameter(name: str) -> None:
    model = build(name, SMALL).train()
    logits = model(*model.example_inputs(4))
    F.cross_entropy(logits.reshape(-1, 64), torch.randint(0, 64, (16,))).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing


def test_width_scales_the_cnn() -> None:
    assert count_params(create_model("image_student", width=0.5)) < count_params(create_model("image_student"))


# ------------------------------------------------- default profile, paper layouts, int8-friendly blocks

DEFAULT = {"image_size": 64, "radar_shape": [64, 32]}
PAPER_LAYOUT = {"image_student": {"stem": "conv", "channels": [18, 36, 72, 144], "norm": "layer"},
                "fusion_student": {"stem": "conv", "norm": "layer"}}


@pytest.mark.parametrize("teacher, student", [("image_teacher", "image_student"),
                                              ("fusion_teacher", "fusion_student"),
                                              ("radar_teacher", "radar_student")])
def test_students_at_least_15x_smaller_at_default_profile(teacher: str, student: str) -> None:
    assert count_params(build(teacher, DEFAULT)) >= 15 * count_params(build(student, DEFAULT))


@pytest.mark.parametrize("name, paper", [("image_student", 0.095e6), ("fusion_student", 0.106e6)])
def test_paper_layout_students_within_3_percent(name: str, paper: float) -> None:
    params = count_params(build(name, PAPER, **PAPER_LAYOUT[name]))
    assert abs(params / paper - 1) < 0.03, params


@pytest.mark.parametrize("size, pools, grid", [(224, 5, 7), (64, 3, 8), (32, 2, 8), (128, 4, 8), (96, 4, 6)])
def test_teacher_pools_to_about_7x7(size: int, pools: int, grid: int) -> None:
    from edgekd.host.models.image import pooling_stages

    assert pooling_stages(size, 7, 5) == pools
    encoder = create_model("image_teacher", image_size=size).encoder
    assert encoder.map_size == grid
    assert sum(isinstance(m, nn.MaxPool2d) for m in encoder.cnn) == pools
    assert encoder.fc[0].in_features == 64 * grid * grid
    with torch.no_grad():
        assert encoder.cnn(torch.rand(2, 1, size, size)).shape == (2, 64, grid, grid)


def test_teacher_final_grid_none_is_the_always_pool_layout() -> None:
    legacy = create_model("image_teacher", image_size=64, final_grid=None).encoder
    assert legacy.map_size == 2 and legacy.fc[0].in_features == 64 * 2 * 2


@pytest.mark.parametrize("shape, strided, grid", [((128, 64), 4, (8, 4)), ((64, 32), 3, (8, 4)),
                                                  ((32, 16), 2, (8, 4))])
def test_radar_teacher_strides_to_the_paper_grid(shape: tuple, strided: int, grid: tuple) -> None:
    from edgekd.host.models.radar import strided_stages

    assert strided_stages(shape, (8, 4), 4) == strided
    encoder = create_model("radar_teacher", radar_shape=list(shape)).encoder
    with torch.no_grad():
        assert encoder.cnn(torch.rand(2, 2, *shape)).shape == (2, 64, *grid)
    assert encoder.flat == 64 * grid[0] * grid[1]
    legacy = create_model("radar_teacher", radar_shape=list(shape), radar_grid=None).encoder
    assert legacy.flat == 64 * (shape[0] // 16) * (shape[1] // 16)


@pytest.mark.parametrize("channels, block", [(1, 8), (2, 4), (3, 2)])
def test_space_to_depth_is_pixel_unshuffle(channels: int, block: int) -> None:
    from edgekd.host.models.blocks import SpaceToDepth

    x = torch.randn(3, channels, 16, 8)
    assert torch.equal(SpaceToDepth(block, channels, 16, 8)(x), F.pixel_unshuffle(x, block))


def test_patch_stem_equals_a_strided_patch_convolution() -> None:
    from edgekd.host.models.blocks import patch_stem

    torch.manual_seed(0)
    stem = patch_stem(2, 12, patch=4, size=(16, 8)).eval()
    conv = stem[1][0]
    x = torch.randn(2, 2, 16, 8)
    # The 1x1 conv over patch channels (c, i, j) is a 4x4 stride-4 conv with the same weights.
    kernel = conv.weight.reshape(12, 2, 4, 4)
    with torch.no_grad():
        want = F.relu(stem[1][1](F.conv2d(x, kernel, stride=4)))
        assert torch.allclose(stem(x), want, atol=1e-5)


def test_sequence_batch_norm_normalises_over_batch_and_steps() -> None:
    from edgekd.host.models.blocks import SequenceBatchNorm

    norm = SequenceBatchNorm(5).train()
    seq = 3 + 2 * torch.randn(4, 6, 5)
    out = norm(seq)
    assert out.shape == seq.shape
    flat = out.reshape(-1, 5)
    assert torch.allclose(flat.mean(0), torch.zeros(5), atol=1e-5)
    assert torch.allclose(flat.var(0, unbiased=False), torch.ones(5), atol=1e-3)


@pytest.mark.parametrize("name", ["image_student", "radar_student", "fusion_student"])
def test_paper_layout_and_default_give_the_same_backbone_shapes(name: str) -> None:
    default = build(name, SMALL).eval()
    paper = build(name, SMALL, stem="conv", norm="layer").eval()
    assert default.feature_shapes() == paper.feature_shapes()
    assert isinstance(paper.norm, nn.LayerNorm) and not isinstance(default.norm, nn.LayerNorm)


@pytest.mark.parametrize("kwargs, field", [({"stem": "pach"}, "stem"), ({"norm": "group"}, "norm"),
                                           ({"channels": [16, 32, 64]}, "channels"),
                                           ({"channels": [16, 32, 0, 144]}, "channels[2]")])
def test_bad_layout_options_are_user_errors(kwargs: dict, field: str) -> None:
    with pytest.raises(EdgekdError) as err:
        create_model("image_student", **kwargs)
    assert err.value.field == field


def test_bad_grids_are_user_errors() -> None:
    with pytest.raises(EdgekdError) as err:
        create_model("radar_teacher", radar_grid=[8])
    assert err.value.field == "radar_grid"
    with pytest.raises(EdgekdError) as err:
        create_model("image_teacher", final_grid=0)
    assert err.value.field == "final_grid"
