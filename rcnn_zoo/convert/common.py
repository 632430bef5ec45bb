"""What every checkpoint converter shares: tensor layout changes and writing into a model.

A converter turns a source state dict into ``{layer path: {variable name: array}}`` for
rcnn_zoo's layers, where the layer path is a variable's path without its last part
(``"conv1_conv"``, ``"rpn_head/objectness"``, ``"box_predictor/cls_score"``) and the variable
names are Keras' (``kernel``, ``bias``, ``gamma``, ``beta``, ``moving_mean``,
``moving_variance``). :func:`assign_layer_weights` writes such a dict into a built model and
checks that every variable was written.

Layout changes (PyTorch → Keras, channels-last):

- conv weight ``[O, I, kh, kw]`` → kernel ``[kh, kw, I, O]``;
- linear weight ``[out, in]`` → Dense kernel ``[in, out]``;
- the first FC after RoI pooling: PyTorch flattens pooled ``[C, ph, pw]`` features, rcnn_zoo
  flattens ``[ph, pw, C]``, so the kernel's input rows are permuted (:func:`fc_after_pool_kernel`);
- batch norm: same four vectors, but Keras' ResNet layers use ``ε = 1.001e-5`` where PyTorch's
  use ``1e-5`` (torchvision's 2019 detection checkpoints: 0). :func:`batch_norm` rescales γ by
  ``√((var + ε_ours) / (var + ε_source))`` so that ``γ'/√(var + ε_ours) = γ/√(var + ε_source)``
  exactly; the only residual is float32 rounding (≈ 1e-7 relative).
"""

import warnings

import numpy as np

from rcnn_zoo.backbones.resnet import _BN_EPSILON as KERAS_BN_EPSILON

__all__ = [
    "ConversionError",
    "assign_layer_weights",
    "batch_norm",
    "conv_kernel",
    "dense_kernel",
    "fc_after_pool_kernel",
    "model_variables_by_layer",
]


class ConversionError(ValueError):
    """A state dict does not fit the converter or the target model."""


def conv_kernel(weight):
    """PyTorch conv weight ``[O, I, kh, kw]`` → Keras kernel ``[kh, kw, I, O]`` (float32)."""
    weight = np.asarray(weight)
    if weight.ndim != 4:
        raise ConversionError(f"expected a 4-D conv weight, got shape {weight.shape}")
    return np.ascontiguousarray(weight.transpose(2, 3, 1, 0), dtype=np.float32)


def dense_kernel(weight):
    """PyTorch linear weight ``[out, in]`` → Keras Dense kernel ``[in, out]`` (float32)."""
    weight = np.asarray(weight)
    if weight.ndim != 2:
        raise ConversionError(f"expected a 2-D linear weight, got shape {weight.shape}")
    return np.ascontiguousarray(weight.T, dtype=np.float32)


def fc_after_pool_kernel(weight, channels, pool_height, pool_width):
    """Linear weight over flattened ``[C, ph, pw]`` → Dense kernel over flattened ``[ph, pw, C]``.

    Row ``(y·pw + x)·C + c`` of the result is column ``c·ph·pw + y·pw + x`` of ``weight``.
    """
    weight = np.asarray(weight)
    out = weight.shape[0]
    if weight.ndim != 2 or weight.shape[1] != channels * pool_height * pool_width:
        raise ConversionError(
            f"first box-head FC has shape {weight.shape}, expected (*, {channels}·{pool_height}·"
            f"{pool_width} = {channels * pool_height * pool_width})"
        )
    kernel = weight.reshape(out, channels, pool_height, pool_width).transpose(2, 3, 1, 0)
    return np.ascontiguousarray(kernel.reshape(pool_height * pool_width * channels, out), np.float32)


def batch_norm(weight, bias, running_mean, running_var, source_epsilon, target_epsilon=KERAS_BN_EPSILON):
    """PyTorch BN tensors → ``{gamma, beta, moving_mean, moving_variance}`` for a Keras BN layer
    with ``target_epsilon``, folding the epsilon difference into γ (see module docstring)."""
    var = np.asarray(running_var, np.float64)
    denominator = var + float(source_epsilon)
    if np.any(denominator <= 0):
        raise ConversionError(
            "batch-norm running variance + epsilon is ≤ 0 for some channels; the source model "
            "would divide by zero there"
        )
    factor = np.sqrt((var + float(target_epsilon)) / denominator)
    return {
        "gamma": (np.asarray(weight, np.float64) * factor).astype(np.float32),
        "beta": np.asarray(bias, np.float32),
        "moving_mean": np.asarray(running_mean, np.float32),
        "moving_variance": var.astype(np.float32),
    }


def model_variables_by_layer(model):
    """``{layer path: {variable name: variable}}`` over ``model.weights``."""
    layers = {}
    for variable in model.weights:
        parent, _, name = variable.path.rpartition("/")
        layers.setdefault(parent, {})[name] = variable
    return layers


def assign_layer_weights(model, layer_weights, leave_initialised=()):
    """Write converted arrays into ``model`` and check that nothing was left out.

    Args:
        model: a built detector of the converter's configuration.
        layer_weights: ``{layer path: {variable name: array}}``.
        leave_initialised: layer paths deliberately not written (e.g. the class-specific
            predictor when the class count changes); entries for them are ignored.

    Raises:
        ConversionError: a layer or variable the model does not have, a shape mismatch, or model
            variables that received nothing (naming them).
    """
    targets = model_variables_by_layer(model)
    leave = set(leave_initialised)
    written = set()
    for layer, arrays in layer_weights.items():
        if layer in leave:
            continue
        if layer not in targets:
            raise ConversionError(
                f"the model has no layer {layer!r} (is it built with the converter's backbone "
                "and hyperparameters?)"
            )
        for name, array in arrays.items():
            variable = targets[layer].get(name)
            if variable is None:
                raise ConversionError(f"layer {layer!r} has no variable {name!r}")
            array = np.asarray(array)
            if tuple(variable.shape) != array.shape:
                raise ConversionError(
                    f"{layer}/{name}: the model's variable has shape {tuple(variable.shape)}, the "
                    f"converted tensor {array.shape}"
                )
            variable.assign(array.astype(variable.dtype))
            written.add(f"{layer}/{name}")
    missing = [
        f"{layer}/{name}"
        for layer, variables in targets.items()
        if layer not in leave
        for name in variables
        if f"{layer}/{name}" not in written
    ]
    if missing:
        raise ConversionError(
            f"{len(missing)} model variables received no converted value: {missing[:8]}"
            + (" …" if len(missing) > 8 else "")
        )
    return sorted(written)


class KeyReader:
    """Takes tensors out of a state dict by name and remembers which were used."""

    def __init__(self, state_dict, source):
        self.state_dict = state_dict
        self.source = source
        self.used = set()

    def __contains__(self, key):
        return key in self.state_dict

    def __call__(self, key, shape=None):
        if key not in self.state_dict:
            raise ConversionError(f"{self.source} state dict has no {key!r}")
        value = np.asarray(self.state_dict[key])
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise ConversionError(
                f"{self.source} tensor {key!r} has shape {tuple(value.shape)}, expected {tuple(shape)}"
            )
        self.used.add(key)
        return value

    def warn_unused(self, ignore_suffixes=("num_batches_tracked",)):
        unused = sorted(
            k for k in self.state_dict if k not in self.used and not k.endswith(ignore_suffixes)
        )
        if unused:
            warnings.warn(
                f"{len(unused)} {self.source} tensors have no rcnn_zoo counterpart and were "
                f"ignored: {unused[:6]}" + (" …" if len(unused) > 6 else ""),
                stacklevel=3,
            )
        return unused
