"""Data-free knowledge distillation for the LiDAR student (paper 2, Alg. 1).

A generator inverts the frozen teacher, then the student learns from the
generator's output only. No training input and no label is ever read.

1. The teacher checkpoint carries its *metadata*: the mean and variance of its
   last hidden state over the real training set (``teacher_stats``, written by
   ``edgekd train`` or ``edgekd metadata CKPT --data D``).
2. The generator ``z (500) -> Linear 64 -> ReLU -> Linear T*216 -> tanh`` is
   trained against the frozen teacher with named loss terms (:func:`.losses.generator_loss_terms`):
   ``loss_metadata`` (batch mean/variance of the teacher's last hidden state vs
   the metadata), ``loss_activation`` (negative norm of a teacher activation)
   and ``loss_entropy`` (entropy of the teacher's softmax); the variant
   ``weighted`` sums them with alpha/beta/gamma, the others keep one term.
3. As the reference does, the trained generator then synthesises a *fixed* set
   (5000 windows by default) and the teacher labels it once with its logits.
4. The student is trained on that set only, by the one trainer
   (:class:`edgekd.host.distill.trainer.Trainer`, fed by :class:`SyntheticSource`, with the
   method :class:`edgekd.host.distill.methods.DataFreeKD`):
   KL at temperature T (x T^2) or MSE between raw logits. By default it starts from
   the teacher's first layer, kept frozen (``DataFreeConfig.student_init``).
5. With ``data=`` the student (and the teacher, for reference) are evaluated on
   the *test* split; that split is the only real data the data-free run opens
   (:func:`open_evaluation_split`). The teacher side (:func:`add_layer_metadata`,
   run by ``edgekd metadata`` where the teacher was trained) is the one function
   that reads training windows, to write the metadata.

Richer metadata (beyond the paper): ``edgekd metadata`` also stores per-step mean
and variance of the teacher's first-layer pre-activations and of its GRU state at
every step (:data:`METADATA_LAYERS`), like DeepInversion's batch-norm statistics;
the metadata loss then matches all of them. On the synthetic scenario, matching the
last hidden state alone leaves the generator far from real scans (student at ~30% of
the teacher's top-5); see BENCHMARKS.md.

From scratch (``student_init: scratch``, no teacher weight in the student), the student only ever
sees the teacher's answers on the generator's low-dimensional output set, and real scans lie off it.
``input_noise`` adds Gaussian noise to every synthetic batch and has the frozen teacher label the
noisy windows afresh, so the student learns the teacher around that set too; with 200 student
epochs (``configs/datafree_scratch.yaml``) this reached 89.9 % of the teacher's top-5 over three
seeds, against ~71 % without (BENCHMARKS.md). ``adversarial_steps`` (Adaptive DeepInversion's
competition term) is there too and measured worse.

Input mapping: real inputs are ranges in metres / 10 per azimuth bin, in
``[0, max_range / 10]`` (0 = no return; 40 m -> 4.0 in the synthetic scenario).
The generator's ``tanh`` output ``y`` in ``[-1, 1]`` is mapped affinely onto
``input_range = (low, high)`` (default ``(0, 4)``): ``x = low + (y + 1) / 2 * (high - low)``
(``sigmoid``: ``x = low + y * (high - low)``). ``output_mapping: no_return``
reads ``y < 0`` as a missing return instead: ``x = low + max(y, 0) * (high - low)``,
so the generator can emit the exact zeros that a third of real bins hold. The generator makes the T = 8
observed frames; the horizons - 1 future steps are padded inside the model,
exactly as for real inputs (a zero scan, see :mod:`edgekd.host.models.lidar`).

Layout: :mod:`.losses` (the generator's loss terms), :mod:`.teacher` (the teacher and
its metadata), :mod:`.generator` (the generator and the synthetic set), :mod:`.run`
(the student phase and the whole run). Everything is importable from here.
"""

from edgekd.host.distill.datafree.generator import (
    LidarGenerator,
    SyntheticSet,
    fit_generator,
    synthesize_set,
    train_generator,
)
from edgekd.host.distill.datafree.losses import (
    GENERATOR_VARIANTS,
    TeacherMetadata,
    activation_loss,
    competition_loss,
    entropy_loss,
    generator_loss_terms,
    generator_loss_weights,
    layer_metadata_loss,
    metadata_loss,
    needs_metadata,
    smoothness_loss,
)
from edgekd.host.distill.datafree.run import (
    BEYOND_PAPER_OPTIONS,
    EVALUATION_SPLIT,
    SHAPE_KWARGS,
    STUDENT_INITS,
    DataFreeResult,
    Relabelled,
    SyntheticSource,
    beyond_paper_options,
    bin_noise,
    distill_datafree,
    evaluate_on,
    init_student_from_teacher,
    open_evaluation_split,
    student_kwargs_from_teacher,
    train_student,
)
from edgekd.host.distill.datafree.teacher import (
    METADATA_LAYERS,
    MODALITY,
    add_layer_metadata,
    check_layer_metadata,
    layer_statistics,
    load_teacher,
    teacher_layer_features,
    teacher_metadata,
)

__all__ = [
    "BEYOND_PAPER_OPTIONS", "DataFreeResult", "EVALUATION_SPLIT", "GENERATOR_VARIANTS", "LidarGenerator",
    "METADATA_LAYERS", "MODALITY", "Relabelled", "SHAPE_KWARGS", "STUDENT_INITS", "SyntheticSet", "SyntheticSource",
    "TeacherMetadata", "activation_loss", "add_layer_metadata", "beyond_paper_options", "bin_noise",
    "check_layer_metadata", "competition_loss", "distill_datafree", "entropy_loss", "evaluate_on", "fit_generator",
    "generator_loss_terms", "generator_loss_weights", "init_student_from_teacher", "layer_metadata_loss",
    "layer_statistics", "load_teacher", "metadata_loss", "needs_metadata", "open_evaluation_split", "smoothness_loss",
    "student_kwargs_from_teacher", "synthesize_set", "teacher_layer_features", "teacher_metadata", "train_generator",
    "train_student",
]
