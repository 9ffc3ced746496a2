"""Data-free KD (paper 2): generator, generator loss terms, metadata handling, the student phase."""

from __future__ import annotations

import math

import pytest
import torch

from edgekd.device.config import load_config
from edgekd.device.errors import EdgekdError
from edgekd.device.metrics import count_params
from edgekd.host.checkpoint import load_checkpoint, save_checkpoint
from edgekd.host.distill import datafree as D
from edgekd.host.distill.config import DataFreeConfig, TrainConfig, load_train_config
from edgekd.host.distill.methods import build_distiller, get_method, list_methods
from edgekd.host.models import create_model

torch.set_num_threads(1)


def _teacher(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("lidar_teacher").eval()


def _real_like_windows(n: int, seed: int = 0) -> torch.Tensor:
    """Windows shaped like real scans: a background wall plus one bright blob that moves across the bins."""
    g = torch.Generator().manual_seed(seed)
    start = torch.rand(n, 1, 1, generator=g) * 180 + 18
    steps = torch.arange(8).view(1, 8, 1) * (torch.rand(n, 1, 1, generator=g) * 4 - 2)
    bins = torch.arange(216).view(1, 1, 216)
    blob = 1.5 * torch.exp(-0.5 * ((bins - start - steps) / 3.0) ** 2)
    return (2.5 - blob + 0.02 * torch.randn(n, 8, 216, generator=g)).clamp(0, 4)


def _stats(teacher, x):
    with torch.no_grad():
        h = teacher.forward_features(x)["last_hidden"]
    return h.mean(0), h.var(0, unbiased=False)


# --------------------------------------------------------------------------- sizes and registry


def test_paper_parameter_counts():
    assert count_params(create_model("lidar_teacher")) == 96_640
    assert count_params(create_model("lidar_student")) == 25_408
    # generator: 500 -> 64 -> 8*216 (paper 2 Sec. IV)
    gen = D.LidarGenerator()
    assert count_params(gen) == 500 * 64 + 64 + 64 * 8 * 216 + 8 * 216


def test_datafree_is_a_registered_method():
    assert "datafree" in list_methods()
    assert get_method("dfkd") is get_method("datafree")


# --------------------------------------------------------------------------- the generator


@pytest.mark.parametrize("output", ["tanh", "sigmoid"])
def test_generator_shape_and_input_range(output):
    gen = D.LidarGenerator(output=output, input_range=(0.0, 4.0))
    # huge weights saturate the activation: outputs must reach both ends of the range and never leave it
    with torch.no_grad():
        for p in gen.parameters():
            p.mul_(50)
        x = gen(gen.noise(64, torch.Generator().manual_seed(0)))
    assert x.shape == (64, 8, 216)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 4.0
    assert float(x.min()) < 0.05 and float(x.max()) > 3.95


def test_generator_maps_tanh_zero_to_mid_range():
    gen = D.LidarGenerator(input_range=(1.0, 3.0))
    with torch.no_grad():
        for p in gen.parameters():
            p.zero_()
    assert torch.allclose(gen(torch.randn(2, 500)), torch.full((2, 8, 216), 2.0))


def test_generator_noise_is_seeded():
    gen = D.LidarGenerator()
    a = gen.noise(4, torch.Generator().manual_seed(3))
    b = gen.noise(4, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (4, 500)


# --------------------------------------------------------------------------- loss terms (golden values)


def test_metadata_loss_golden():
    hidden = torch.tensor([[1.0, 0.0], [3.0, 2.0]])          # mean (2, 1), population var (1, 1)
    assert float(D.metadata_loss(hidden, torch.tensor([2.0, 1.0]), torch.tensor([1.0, 1.0]))) == 0.0
    # mean error (1, -1) -> MSE 1; var error (0.5, 0) -> MSE 0.125
    value = D.metadata_loss(hidden, torch.tensor([1.0, 2.0]), torch.tensor([0.5, 1.0]))
    assert float(value) == pytest.approx(1.125)
    with pytest.raises(ValueError, match="units"):
        D.metadata_loss(hidden, torch.zeros(3), torch.zeros(3))


def test_activation_loss_golden():
    features = torch.tensor([[3.0, -4.0], [0.0, 0.0]])
    # L2: -(5 / sqrt 2 + 0) / 2 ; L1: -(7 / 2 + 0) / 2
    assert float(D.activation_loss(features, "l2")) == pytest.approx(-5 / math.sqrt(2) / 2)
    assert float(D.activation_loss(features, "l1")) == pytest.approx(-7 / 2 / 2)
    with pytest.raises(ValueError):
        D.activation_loss(features, "l3")


def test_entropy_loss_golden():
    assert float(D.entropy_loss(torch.zeros(2, 4, 64))) == pytest.approx(math.log(64), rel=1e-6)
    confident = torch.full((1, 4, 64), -100.0)
    confident[..., 7] = 100.0
    assert float(D.entropy_loss(confident)) == pytest.approx(0.0, abs=1e-6)


def test_generator_loss_weights_per_variant():
    cfg = DataFreeConfig(metadata_weight=2.0, activation_weight=0.5, entropy_weight=0.25)
    assert D.generator_loss_weights(cfg) == {"loss_metadata": 2.0, "loss_activation": 0.5, "loss_entropy": 0.25}
    for variant in ("metadata", "activation", "entropy"):
        assert D.generator_loss_weights(DataFreeConfig(generator_loss=variant)) == {f"loss_{variant}": 1.0}
    with pytest.raises(ValueError, match="positive"):
        D.generator_loss_weights(DataFreeConfig(metadata_weight=0, activation_weight=0, entropy_weight=0))


def test_generator_loss_terms_are_the_weighted_sum():
    teacher = _teacher()
    x = _real_like_windows(16)
    stats = _stats(teacher, _real_like_windows(32, seed=1))
    feats = teacher.forward_features(x)
    cfg = DataFreeConfig(metadata_weight=1.0, activation_weight=0.3, entropy_weight=0.2)
    terms = D.generator_loss_terms(feats, stats, cfg)
    assert set(terms) == {"loss", "loss_metadata", "loss_activation", "loss_entropy"}
    expected = terms["loss_metadata"] + 0.3 * terms["loss_activation"] + 0.2 * terms["loss_entropy"]
    assert torch.allclose(terms["loss"], expected)
    assert torch.allclose(terms["loss_entropy"], D.entropy_loss(feats["logits"]))
    # activation-only needs no metadata
    only = D.generator_loss_terms(feats, None, DataFreeConfig(generator_loss="activation"))
    assert torch.allclose(only["loss"], only["loss_activation"]) and "loss_metadata" not in only


# --------------------------------------------------------------------------- metadata in the checkpoint


def test_teacher_without_metadata_is_a_clear_error(tmp_path):
    path = save_checkpoint(tmp_path / "t.pt", _teacher())
    with pytest.raises(EdgekdError) as err:
        D.load_teacher(path, DataFreeConfig(generator_loss="metadata"))
    message = str(err.value)
    assert "teacher_stats" in message and f"edgekd metadata {path} --data" in message
    # the variants that do not use the metadata still run
    _, teacher, metadata = D.load_teacher(path, DataFreeConfig(generator_loss="entropy"))
    assert metadata is None and not any(p.requires_grad for p in teacher.parameters())


def test_teacher_metadata_width_must_match(tmp_path):
    stats = {"last_hidden_mean": [0.0] * 32, "last_hidden_var": [1.0] * 32, "count": 10}
    path = save_checkpoint(tmp_path / "t.pt", _teacher(), teacher_stats=stats)
    with pytest.raises(EdgekdError, match="32 units"):
        D.load_teacher(path, DataFreeConfig(generator_loss="metadata"))
    bad = {"last_hidden_mean": [0.0] * 128, "last_hidden_var": [-1.0] * 128, "count": 10}
    with pytest.raises(EdgekdError, match="malformed"):
        D.teacher_metadata(load_checkpoint(save_checkpoint(tmp_path / "b.pt", _teacher(), teacher_stats=bad)))


# --------------------------------------------------------------------------- training phases


def test_generator_learns_the_metadata():
    teacher = _teacher()
    mean, var = _stats(teacher, _real_like_windows(256))
    cfg = DataFreeConfig(generator_loss="metadata", generator_steps=120, generator_batch_size=32,
                         smoothness_weight=0.0)   # the metadata term alone
    generator, history = D.train_generator(teacher, (mean, var), cfg, seed=0, progress=False, log_every=20)
    assert [h["step"] for h in history] == [20, 40, 60, 80, 100, 120]
    first, last = history[0]["loss_metadata"], history[-1]["loss_metadata"]
    assert last < 0.5 * first, (first, last)
    # the teacher did not move and takes no gradients
    assert all(p.grad is None for p in teacher.parameters())
    synthetic = D.synthesize_set(generator, teacher, 100, seed=1, batch_size=32)
    assert synthetic.inputs.shape == (100, 8, 216) and synthetic.teacher_logits.shape == (100, 4, 64)
    assert torch.allclose(synthetic.teacher_logits, teacher(synthetic.inputs), atol=1e-5)
    summary = synthetic.summary()
    assert summary["n"] == 100 and summary["input_window_std"] > 0


def test_datafree_distiller_refuses_labelled_batches_and_picks_the_loss():
    teacher, student = _teacher(), create_model("lidar_student")
    x = _real_like_windows(8)
    with torch.no_grad():
        t_logits = teacher(x)
    kl = build_distiller("datafree", student, teacher, TrainConfig()).eval()   # no student dropout: comparable
    assert kl.cfg.temperature == 2.0     # the reference's T
    _, terms = kl({"lidar": x, "teacher_logits": t_logits})
    assert set(terms) == {"loss", "loss_kd"}
    _, live = kl({"lidar": x})           # without precomputed logits the frozen teacher runs
    assert torch.allclose(terms["loss"], live["loss"])
    mse = build_distiller("datafree", student, teacher,
                          TrainConfig(datafree=DataFreeConfig(student_loss="mse"))).eval()
    _, terms = mse({"lidar": x, "teacher_logits": t_logits})
    assert set(terms) == {"loss", "loss_mse"}
    assert torch.allclose(terms["loss"], (student(x) - t_logits).pow(2).mean())
    with pytest.raises(ValueError, match="generated inputs only"):
        kl({"lidar": x, "beams": torch.zeros(8, 4, dtype=torch.long)})


@pytest.mark.parametrize("student_loss", ["kl", "mse"])
def test_student_phase_matches_the_teacher_on_the_synthetic_set(student_loss):
    teacher = _teacher()
    synthetic = D.SyntheticSet(_real_like_windows(256), torch.zeros(0))
    with torch.no_grad():
        synthetic.teacher_logits = teacher(synthetic.inputs)
    torch.manual_seed(0)
    student = create_model("lidar_student")
    cfg = TrainConfig(epochs=8, lr=3e-3, progress=False, datafree=DataFreeConfig(student_loss=student_loss))
    with torch.no_grad():
        before = (student.eval()(synthetic.inputs) - synthetic.teacher_logits).pow(2).mean()
    student, history = D.train_student(student, teacher, synthetic, cfg)
    with torch.no_grad():
        after = (student(synthetic.inputs) - synthetic.teacher_logits).pow(2).mean()
    assert len(history) == 8 and history[-1]["loss"] < history[0]["loss"]
    assert float(after) < 0.5 * float(before)


def test_student_phase_stops_on_a_non_finite_loss():
    teacher = _teacher()
    synthetic = D.SyntheticSet(_real_like_windows(64), torch.zeros(0))
    with torch.no_grad():
        synthetic.teacher_logits = teacher(synthetic.inputs)
    # Finite targets whose squared error overflows float32: the data is not NaN, the loss is.
    synthetic.teacher_logits[3] = 3e38
    cfg = TrainConfig(epochs=2, progress=False, datafree=DataFreeConfig(student_loss="mse"))
    with pytest.raises(EdgekdError, match=r"training loss became (nan|inf) at epoch 1") as raised:
        D.train_student(create_model("lidar_student"), teacher, synthetic, cfg)
    assert raised.value.field == "lr"


def test_student_phase_names_nan_teacher_outputs_not_the_learning_rate():
    teacher = _teacher()
    synthetic = D.SyntheticSet(_real_like_windows(64), torch.zeros(0))
    with torch.no_grad():
        synthetic.teacher_logits = teacher(synthetic.inputs)
    synthetic.teacher_logits[3] = float("nan")
    cfg = TrainConfig(epochs=2, progress=False, datafree=DataFreeConfig(student_loss="mse"))
    with pytest.raises(EdgekdError, match="training input 'teacher_logits' holds NaN/inf values in 1 of") as raised:
        D.train_student(create_model("lidar_student"), teacher, synthetic, cfg)
    assert raised.value.field == "frames/teacher_logits"


# --------------------------------------------------------------------------- config


def test_datafree_section_of_the_yaml_config(tmp_path):
    path = tmp_path / "df.yaml"
    path.write_text("epochs: 3\ntemperature: 2.0\ndatafree:\n  generator_loss: metadata\n  student_loss: mse\n"
                    "  input_range: [0.0, 4.0]\n  synthetic_samples: 100\n")
    cfg = load_train_config(path)
    assert cfg.datafree.generator_loss == "metadata" and cfg.datafree.student_loss == "mse"
    assert cfg.datafree.input_range == (0.0, 4.0) and cfg.datafree.synthetic_samples == 100
    path.write_text("datafree:\n  generator_los: metadata\n")
    with pytest.raises(EdgekdError, match="generator_los"):
        load_train_config(path)
    path.write_text("datafree:\n  input_range: [4.0, 0.0]\n")
    with pytest.raises(EdgekdError, match="input_range"):
        load_train_config(path)
    with pytest.raises(EdgekdError, match="generator_loss"):
        load_config(TrainConfig, None, datafree={"generator_loss": "bogus"})


def test_no_return_mapping_emits_exact_zeros():
    gen = D.LidarGenerator(input_range=(0.0, 4.0), mapping="no_return")
    with torch.no_grad():
        x = gen(gen.noise(32, torch.Generator().manual_seed(0)))
    assert float(x.min()) == 0.0 and 0.2 < float((x == 0).float().mean()) < 0.8 and float(x.max()) <= 4.0
    with pytest.raises(ValueError):
        D.LidarGenerator(output="sigmoid", mapping="no_return")


def test_resampled_student_phase_sees_a_fresh_set_every_epoch():
    teacher = _teacher()
    gen = D.LidarGenerator()
    seen = []

    def resample(epoch):
        seen.append(epoch)
        return D.synthesize_set(gen, teacher, 64, seed=epoch)

    cfg = TrainConfig(epochs=3, progress=False)
    _, history = D.train_student(create_model("lidar_student"), teacher, resample(1), cfg, resample=resample)
    assert seen == [1, 2, 3] and len(history) == 3


# --------------------------------------------------------------------------- richer metadata, priors, student init


def test_layer_features_reproduce_the_teacher():
    teacher = _teacher()
    x = _real_like_windows(6)
    feats = D.teacher_layer_features(teacher, x)
    reference = teacher.forward_features(x)
    for name in ("logits", "last_hidden", "embedding"):
        assert torch.allclose(feats[name], reference[name], atol=1e-6), name
    assert feats["embedding_pre"].shape == (6, 8, 64) and feats["gru_hidden"].shape == (6, 11, 128)
    assert torch.allclose(feats["gru_hidden"][:, -4:], reference["recurrent"], atol=1e-6)
    assert torch.equal(torch.relu(feats["embedding_pre"]), feats["embedding"])


def test_layer_statistics_do_not_depend_on_batching_and_round_trip(tmp_path):
    teacher = _teacher()
    x = _real_like_windows(40)
    stats = D.layer_statistics(teacher, [x[:7], x[7:30], x[30:]])
    assert stats["layers_count"] == 40 and set(stats["layers"]) == set(D.METADATA_LAYERS)
    with torch.no_grad():
        pre = D.teacher_layer_features(teacher, x)["embedding_pre"]
    assert torch.allclose(torch.tensor(stats["layers"]["embedding_pre"]["mean"]), pre.mean(0), atol=1e-5)
    assert torch.allclose(torch.tensor(stats["layers"]["embedding_pre"]["var"]), pre.var(0, unbiased=False),
                          atol=1e-4)
    mean, var = _stats(teacher, x)
    path = save_checkpoint(tmp_path / "t.pt", teacher, teacher_stats={
        "last_hidden_mean": mean.tolist(), "last_hidden_var": var.tolist(), "count": 40, **stats})
    _, _, meta = D.load_teacher(path, DataFreeConfig(generator_loss="metadata"))
    assert set(meta.layers) == set(D.METADATA_LAYERS) and meta.layers["gru_hidden"][0].shape == (11, 128)
    # on the very windows it was computed from, the whole metadata term is ~0
    terms = D.generator_loss_terms(D.teacher_layer_features(teacher, x), meta,
                                   DataFreeConfig(generator_loss="metadata"))
    assert float(terms["loss_metadata"].detach()) < 1e-6
    wrong = {**stats, "layers": {"embedding_pre": {"mean": [[0.0] * 64] * 7, "var": [[1.0] * 64] * 7}}}
    bad = save_checkpoint(tmp_path / "b.pt", teacher, teacher_stats={
        "last_hidden_mean": mean.tolist(), "last_hidden_var": var.tolist(), "count": 40, **wrong})
    with pytest.raises(EdgekdError, match="embedding_pre"):
        D.load_teacher(bad, DataFreeConfig(generator_loss="metadata"))


def test_layer_metadata_loss_is_the_sum_of_per_layer_terms():
    a, b = torch.randn(5, 3, 4), torch.randn(5, 2)
    layers = {"a": (torch.zeros(3, 4), torch.ones(3, 4)), "b": (torch.ones(2), torch.zeros(2))}
    expected = (D.metadata_loss(a.reshape(5, -1), torch.zeros(12), torch.ones(12))
                + D.metadata_loss(b, torch.ones(2), torch.zeros(2)))
    assert torch.allclose(D.layer_metadata_loss({"a": a, "b": b}, layers), expected)
    with pytest.raises(ValueError, match="no feature"):
        D.layer_metadata_loss({"a": a}, layers)


def test_smoothness_prior_golden_and_in_the_weighted_sum():
    flat = torch.full((2, 8, 216), 1.5)
    assert float(D.smoothness_loss(flat)) == 0.0
    ramp = torch.arange(216.0).repeat(2, 8, 1) * 0.01 + torch.arange(8.0).view(1, 8, 1) * 0.5
    assert float(D.smoothness_loss(ramp)) == pytest.approx(0.01 + 0.5)
    teacher = _teacher()
    x = _real_like_windows(4)
    terms = D.generator_loss_terms(teacher.forward_features(x), None, DataFreeConfig(generator_loss="entropy"),
                                   inputs=x, smoothness_weight=0.5)
    assert torch.allclose(terms["loss"], terms["loss_entropy"] + 0.5 * D.smoothness_loss(x))
    with pytest.raises(ValueError, match="inputs"):
        D.generator_loss_terms(teacher.forward_features(x), None, DataFreeConfig(generator_loss="entropy"),
                               smoothness_weight=0.5)


def test_student_init_copies_and_freezes_the_teacher_embedding():
    teacher = _teacher()
    torch.manual_seed(1)
    student = D.init_student_from_teacher(create_model("lidar_student"), teacher, "teacher_embedding")
    assert torch.equal(student.embed.weight, teacher.embed.weight) and not student.embed.weight.requires_grad
    assert count_params(student) == 25_408          # the same student, only its start and what trains differ
    synthetic = D.SyntheticSet(_real_like_windows(64), torch.zeros(0))
    with torch.no_grad():
        synthetic.teacher_logits = teacher(synthetic.inputs)
    cfg = TrainConfig(epochs=2, progress=False, datafree=DataFreeConfig(student_loss="mse"))
    gru_before = student.head.gru.weight_hh_l0.detach().clone()
    D.train_student(student, teacher, synthetic, cfg)
    assert torch.equal(student.embed.weight, teacher.embed.weight)
    assert not torch.equal(student.head.gru.weight_hh_l0, gru_before)
    scratch = create_model("lidar_student")
    kept = scratch.embed.weight.detach().clone()
    assert torch.equal(D.init_student_from_teacher(scratch, teacher, "scratch").embed.weight, kept)
    with pytest.raises(ValueError):
        D.init_student_from_teacher(scratch, teacher, "bogus")
    with pytest.raises(EdgekdError, match="first layer"):
        D.init_student_from_teacher(create_model("lidar_student", lidar_bins=100, window=8), teacher,
                                    "teacher_embedding")


def test_config_rejects_an_unknown_student_init():
    with pytest.raises(ValueError, match="student_init"):
        DataFreeConfig(student_init="random")


# --------------------------------------------------------------------------- adversarial refinement (competition term)


def test_competition_loss_golden():
    # identical distributions: JS 0, loss 1; disjoint one-hot-like ones: JS -> ln 2, loss -> 0
    logits = torch.randn(5, 4, 64)
    assert float(D.competition_loss(logits, logits)) == pytest.approx(1.0, abs=1e-6)
    a = torch.full((1, 1, 2), -50.0)
    a[..., 0] = 50.0
    assert float(D.competition_loss(a, a.flip(-1))) == pytest.approx(0.0, abs=1e-6)
    # p = (1/2, 1/2), q = (1, 0): JS = 1/2 [KL(p||m) + KL(q||m)] with m = (3/4, 1/4), by hand
    p, q, m = torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0]), torch.tensor([0.75, 0.25])
    js = 0.5 * ((p * (p / m).log()).sum() + q[0] * (q[0] / m[0]).log())
    loss = D.competition_loss(torch.zeros(1, 1, 2), torch.tensor([[[50.0, -50.0]]]))
    assert float(loss) == pytest.approx(float(1 - js / math.log(2)), abs=1e-5)


def test_adversarial_steps_seek_disagreement_and_hand_the_student_back():
    teacher = _teacher()
    mean, var = _stats(teacher, _real_like_windows(256))
    student = create_model("lidar_student").train()
    frozen_before = [p.requires_grad for p in student.parameters()]
    cfg = DataFreeConfig(generator_loss="metadata", generator_steps=40, metadata_weight=0.0 + 1e-9,
                         resample_each_epoch=True, adversarial_steps=60, adversarial_weight=1.0)
    generator, _ = D.train_generator(teacher, (mean, var), cfg, seed=0, progress=False)
    history = D.fit_generator(generator, teacher, D.TeacherMetadata(mean, var), cfg, steps=60, seed=1,
                              student=student, log_every=20)
    assert [h["step"] for h in history] == [20, 40, 60]
    assert history[-1]["loss_competition"] < history[0]["loss_competition"]   # more disagreement found
    # the student did not move, took no gradient, and is handed back in train mode with its flags
    assert all(p.grad is None for p in student.parameters())
    assert student.training and [p.requires_grad for p in student.parameters()] == frozen_before


def test_adversarial_steps_need_fresh_sets():
    with pytest.raises(ValueError, match="resample_each_epoch"):
        DataFreeConfig(adversarial_steps=10)
    with pytest.raises(ValueError, match="adversarial_steps"):
        DataFreeConfig(adversarial_steps=-1, resample_each_epoch=True)
    assert D.beyond_paper_options(DataFreeConfig())["adversarial_steps"] == 0


# --------------------------------------------------------------------------- input noise, relabelled by the teacher


def test_synthetic_batches_carry_seeded_noise_relabelled_by_the_teacher():
    teacher = _teacher()
    synthetic = D.synthesize_set(D.LidarGenerator(), teacher, 40, seed=0)

    def first_batch(noisy, seed=3):
        source = D.SyntheticSource(synthetic, batch_size=40, seed=seed, noisy=noisy)
        return next(source.epoch_batches(1)[1])

    relabelled = D.Relabelled(0.5, 0.0, teacher)
    plain, noisy, again = first_batch(None), first_batch(relabelled), first_batch(relabelled)
    assert torch.equal(noisy["lidar"], again["lidar"]) and torch.equal(noisy["teacher_logits"], again["teacher_logits"])
    assert float((noisy["lidar"] - plain["lidar"]).std()) == pytest.approx(0.5, rel=0.05)
    with torch.no_grad():   # the labels are the teacher's answers on the noisy windows, not the clean ones'
        assert torch.equal(noisy["teacher_logits"], teacher(noisy["lidar"]))
    assert not torch.allclose(noisy["teacher_logits"], plain["teacher_logits"], atol=1e-3)
    assert not torch.equal(first_batch(relabelled, seed=4)["lidar"], noisy["lidar"])
    with pytest.raises(ValueError, match="input_noise"):
        DataFreeConfig(input_noise=-1.0)


def test_bin_noise_keeps_its_std_and_correlates_neighbouring_bins():
    def neighbour_correlation(x):
        return float(torch.corrcoef(torch.stack([x[..., 20:-21].reshape(-1), x[..., 21:-20].reshape(-1)]))[0, 1])

    white = D.bin_noise((400, 8, 216), 0.7, 0.0, torch.Generator().manual_seed(0))
    smooth = D.bin_noise((400, 8, 216), 0.7, 5.0, torch.Generator().manual_seed(0))
    assert float(white.std()) == pytest.approx(0.7, rel=0.02)
    assert float(smooth[..., 20:-20].std()) == pytest.approx(0.7, rel=0.05)   # away from the zero-padded ends
    assert abs(neighbour_correlation(white)) < 0.02
    # a Gaussian kernel of std w correlates neighbours by exp(-1 / (4 w^2)): 0.990 for w = 5
    assert neighbour_correlation(smooth) == pytest.approx(math.exp(-1 / 100), abs=0.005)


def test_the_shipped_from_scratch_recipe_loads_as_measured():
    from edgekd.host.distill.config import example_configs

    cfg = load_train_config(example_configs()["datafree_scratch"])
    df = cfg.datafree
    assert (df.student_init, df.input_noise, df.input_noise_width) == ("scratch", 1.0, 0.0)
    assert (cfg.epochs, cfg.lr, cfg.batch_size, df.generator_loss, df.student_loss) == (200, 0.01, 128, "metadata",
                                                                                       "mse")
    assert df.resample_each_epoch and df.synthetic_samples == 3000 and df.generator_steps == 400
