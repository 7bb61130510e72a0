"""The classifier over frame features, its learning-rate schedule, and device set-up.

LSTM over the frame features -> attention (a tanh score per frame, softmax over time) ->
weighted sum -> dense -> 2-way softmax kept in float32 (under mixed precision a float16 softmax
loses the small probabilities the focal loss weighs).
"""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf
from keras import layers, ops


@keras.saving.register_keras_serializable(package="violence")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `peak` over `warmup` steps, then cosine decay to `peak*floor`."""

    def __init__(self, peak: float, warmup: int, total: int, floor: float = 0.01) -> None:
        self.peak, self.warmup, self.total, self.floor = peak, warmup, max(total, 1), floor

    def __call__(self, step: Any) -> Any:
        step = ops.cast(step, "float32")
        warm = self.peak * (step + 1.0) / max(self.warmup, 1)
        span = max(self.total - self.warmup, 1)
        t = ops.clip((step - self.warmup) / span, 0.0, 1.0)
        cos = self.peak * (self.floor + (1 - self.floor) * 0.5 * (1 + ops.cos(math.pi * t)))
        return ops.where(step < self.warmup, warm, cos)

    def get_config(self) -> dict[str, Any]:
        return {"peak": self.peak, "warmup": self.warmup, "total": self.total, "floor": self.floor}


@keras.saving.register_keras_serializable(package="violence")
class AttentionPool(layers.Layer):
    """Weighted sum over time of the LSTM states; the weights are a softmax of tanh scores."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.score = layers.Dense(1, activation="tanh")

    def build(self, input_shape: Any) -> None:
        self.score.build(input_shape)

    def call(self, h: Any) -> Any:
        w = ops.softmax(self.score(h), axis=1)  # (batch, time, 1)
        return ops.sum(h * w, axis=1)


def build_model(frames: int, dim: int, units: int, dropout: float, seed: int) -> keras.Model:
    x_in = keras.Input((frames, dim), name="frame_features")
    x = layers.LayerNormalization()(x_in)  # VGG features span orders of magnitude
    h = layers.LSTM(units, return_sequences=True, seed=seed)(x)
    x = AttentionPool()(h)
    x = layers.Dense(64, activation="relu")(x)
    x = layers.Dropout(dropout, seed=seed)(x)
    out = layers.Dense(2, activation="softmax", dtype="float32", name="probs")(x)
    return keras.Model(x_in, out, name="lstm_attention")


def gpus() -> list[Any]:
    return tf.config.list_physical_devices("GPU")


def choose_precision(asked: str) -> str:
    """`auto`: mixed_float16 when every visible GPU has tensor cores (compute capability >= 7.0,
    where fp16 is fast), else float32 (on CPU fp16 is emulated: no faster, per the reference)."""
    if asked != "auto":
        return asked
    devs = gpus()
    if not devs:
        return "float32"
    caps = [tf.config.experimental.get_device_details(d).get("compute_capability") for d in devs]
    return "mixed_float16" if all(c and c >= (7, 0) for c in caps) else "float32"


def device_name() -> str:
    devs = gpus()
    if not devs:
        return "cpu"
    names = [tf.config.experimental.get_device_details(d).get("device_name", "gpu") for d in devs]
    return ", ".join(names)


def make_strategy(cpu_replicas: int) -> tf.distribute.Strategy:
    """MirroredStrategy over every visible GPU when there are 2 or more; `cpu_replicas` > 1
    splits the CPU into that many logical devices to exercise the same path without a GPU.
    Must run before TF initializes its devices."""
    devs = gpus()
    if not devs and cpu_replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas
        )
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(cpu_replicas)])
    if len(devs) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()
