"""The private TF converter switch (per-tensor int8 dense layers) is guarded: a TF without it fails loudly."""

from __future__ import annotations

import pytest

from edgekd.device.errors import EdgekdError
from edgekd.host.export import tflite


class _Converter:
    pass


def test_guard_sets_the_switch_when_present():
    converter = _Converter()
    setattr(converter, tflite.DENSE_PER_TENSOR_ATTRIBUTE, False)
    tflite._disable_dense_per_channel(converter, "2.21.0")
    assert getattr(converter, tflite.DENSE_PER_TENSOR_ATTRIBUTE) is tflite.DENSE_PER_TENSOR


def test_guard_fails_loudly_when_a_tf_upgrade_dropped_the_attribute():
    converter = _Converter()
    with pytest.raises(EdgekdError) as info:
        tflite._disable_dense_per_channel(converter, "9.9.9")
    message = str(info.value)
    assert "9.9.9" in message and tflite.DENSE_PER_TENSOR_ATTRIBUTE in message
    assert not hasattr(converter, tflite.DENSE_PER_TENSOR_ATTRIBUTE)   # nothing set silently


def test_guard_fires_on_a_real_converter_without_the_attribute(monkeypatch):
    tf = pytest.importorskip("tensorflow")

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def double(x):
        return 2.0 * x

    converter = tf.lite.TFLiteConverter.from_concrete_functions([double.get_concrete_function()], double)
    assert hasattr(converter, tflite.DENSE_PER_TENSOR_ATTRIBUTE), "this TF still has the switch"
    tflite._disable_dense_per_channel(converter, tf.__version__)
    monkeypatch.delattr(converter, tflite.DENSE_PER_TENSOR_ATTRIBUTE)
    with pytest.raises(EdgekdError, match=tf.__version__):
        tflite._disable_dense_per_channel(converter, tf.__version__)
