"""Frozen batch norm folded into the convolution before it.

A frozen batch norm (``trainable=False``: fixed statistics μ, σ², fixed γ, β — torchvision's
``FrozenBatchNorm2d``) is a per-channel affine map ``y = x·s + t`` with ``s = γ / √(σ² + ε)`` and
``t = β − μ·s``. After a convolution it folds into it::

    conv(x, W)·s + b·s + t  =  conv(x, W·s) + (b·s + t)

so the pair runs as ONE oneDNN conv + bias (+ ReLU) kernel instead of a conv, a multiply and an
add over the whole activation, forward and backward (the gradient of ``W·s`` is a per-weight
scale). The variables stay where they were (the conv's kernel and bias, the norm's γ, β, μ, σ²),
so weight files, converters and ``trainable`` flags are unchanged; the fold is recomputed from
them at every call (a few thousand numbers). When the norm is trainable again (a user unfreezes
it), both layers run unfolded, as Keras' own.

The fold applies only inside :func:`folding` (a detector's ``__call__`` enters it): a conv or a
norm called on its own — a test, a user probing a layer — computes exactly what Keras' own
layer computes, so no layer ever silently skips its normalisation outside the model.

The classes keep Keras' class names on purpose: Keras names saved variables after the
snake-cased class name of each layer in a model's layer list (``conv2d_3``,
``batch_normalization_3``), so the same names keep every existing weight file loading.
"""

import contextlib
import threading

import keras
import tensorflow as tf

_STATE = threading.local()


@contextlib.contextmanager
def folding():
    """Within this block (at trace time), convs absorb the frozen norms linked to them."""
    depth = getattr(_STATE, "depth", 0)
    _STATE.depth = depth + 1
    try:
        yield
    finally:
        _STATE.depth = depth


def _folding_active():
    return getattr(_STATE, "depth", 0) > 0


class _Link:
    """A reference Keras does not track (a Layer attribute would become a sub-layer and move
    the norm's variables under the conv in saved files)."""

    __slots__ = ("layer",)

    def __init__(self, layer):
        self.layer = layer


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class Conv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` that absorbs the frozen :class:`BatchNormalization` after it."""

    _folded_norm = None

    def fold(self, norm):
        """Absorb ``norm`` (the layer applied to this conv's output) while it is frozen."""
        if self.activation is not keras.activations.linear or self.data_format != "channels_last":
            raise ValueError(f"{self.name}: only a linear channels_last conv can absorb a batch norm")
        self._folded_norm = _Link(norm)
        norm._folded_into = _Link(self)

    def folding(self):
        """The norm folded into this conv now: None outside :func:`folding`, when there is none,
        or when it is trainable."""
        norm = self._folded_norm.layer if self._folded_norm is not None and _folding_active() else None
        return norm if norm is not None and not norm.trainable else None

    def call(self, inputs):
        norm = self.folding()
        if norm is None:
            return super().call(inputs)
        kernel, bias = folded_weights(self, norm)
        outputs = self.convolution_op(inputs, tf.cast(kernel, inputs.dtype))
        return tf.nn.bias_add(outputs, tf.cast(bias, outputs.dtype))


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class BatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` that is the identity while its conv applies it."""

    _folded_into = None

    def call(self, inputs, training=None, mask=None):
        conv = self._folded_into.layer if self._folded_into is not None else None
        if conv is not None and conv.folding() is self:
            return inputs
        return super().call(inputs, training=training, mask=mask)


def folded_weights(conv, norm):
    """``(W·s, b·s + t)``: kernel ``[kh, kw, C_in, C_out]`` and bias ``[C_out]``, float32.

    The statistics are float32 variables; γ, β and the kernel are read in the layer's compute
    dtype (as the unfolded layers read them), the products are formed in float32.
    """
    variance = tf.cast(norm.moving_variance, tf.float32)
    scale = tf.math.rsqrt(variance + norm.epsilon)
    if norm.scale:
        scale = scale * tf.cast(norm.gamma, tf.float32)
    shift = -tf.cast(norm.moving_mean, tf.float32) * scale
    if norm.center:
        shift = shift + tf.cast(norm.beta, tf.float32)
    kernel = tf.cast(conv.kernel, tf.float32) * scale
    bias = shift + (tf.cast(conv.bias, tf.float32) * scale if conv.use_bias else 0.0)
    return kernel, bias
