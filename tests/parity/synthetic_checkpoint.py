"""A seeded synthetic torchvision checkpoint that behaves numerically like a trained detector.

NumPy only (importable from the torch env that makes the references and from the main env that
runs the parity test in CI): no torch, TensorFlow or rcnn_zoo import at module level.

    python3 tests/parity/synthetic_checkpoint.py MODEL OUT.pth [--seed N]

writes the checkpoint of ``MODEL`` (a name with a layout in ``layouts/<MODEL>.json``) with the
project's own PyTorch-format writer ``tests/weights/torch_checkpoint_writer.py``.

Every tensor is drawn from its own generator ``np.random.default_rng([seed, crc32(key)])``, so a
tensor depends only on the seed, its key, its shape and the architecture's scales (``FAMILIES``,
``MODEL_OVERRIDES``), not on the order of the layout. ``state_digest`` hashes the result; the
references record it, so a test can check that it regenerated the very same checkpoint.

* convolutions: He-normal, std = gain / sqrt(fan_in) (gain 1.3 for ResNet-50, sqrt 2 for
  MobileNetV3: the values at which the activations neither fade nor blow up over the depth;
  gain 1 for the linear FPN convolutions of v1);
* batch norms: weight ~ U(0.5, 1.5) (U(0.15, 0.45) on the last batch norm of a residual branch:
  ResNet bn3, the MobileNetV3 projection of a block with a shortcut), bias ~ N(0, 0.2),
  running_mean ~ N(0, 0.25), running_var ~ U(0.6, 1.6) (times a scale in v2's FPN layer blocks
  and first box-head conv), num_batches_tracked a random count;
* RPN: objectness logits of std ~2.5 around -1 from one direction shared by the anchors (plus
  30% of their own) so that all anchor shapes compete; box deltas of std ~0.1;
* box head: He-scaled fully connected layers whose rows have zero mean (they then ignore the
  mean that the ReLU before them adds, the same for every proposal), the first one with zero sum
  over the 7 x 7 bins of each channel (it ignores the per-channel constant, which differs by FPN
  level rather than by object); v2's conv heads (RPN and box) use zero-sum 3 x 3 kernels for the
  same reason; a "peaky" classifier (logit std 3, a large background bias) so that a few percent
  of the proposals pass the 0.05 score threshold with varied labels; box regression deltas of
  std ~1 before torchvision's (10, 10, 5, 5) weights, i.e. ~0.1 / 0.2.

The scales were tuned on raccoon-11.jpg, raccoon-147.jpg and raccoon-4.jpg (not parity images)
with ``probe_activations.py`` and checked on the parity images (README.md).
"""

import argparse
import collections
import importlib.util
import json
import os
import re
import zlib

import numpy as np

DEFAULT_SEED = 20240601

HERE = os.path.dirname(os.path.abspath(__file__))
LAYOUT_DIR = os.path.join(HERE, "layouts")
WRITER_PATH = os.path.join(HERE, os.pardir, "weights", "torch_checkpoint_writer.py")

MODELS = (
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
)

# Per-architecture scales (tuned, see README.md). head moments: measured second moment of the
# activations feeding the RPN predictors and the box predictor; their weights are scaled by
# 1 / sqrt(fan_in * moment) so that their outputs have the wanted std.
FAMILIES = {
    "resnet50_fpn": {  # fasterrcnn_resnet50_fpn
        "conv_gain": 1.3,  # He gain; sqrt 2 (~1.41) makes the residual stream grow over ResNet-50, 1.2 shrink
        "fpn_bn_var": 1.0,
        "box_head_bn_var": 1.0,
        "zero_sum_head_convs": False,
        "zero_sum_gain": 1.0,
        "rpn_moment": 6.5,
        "box_moment": 0.7,
        "cls_background_bias": 13.0,
    },
    "resnet50_fpn_v2": {  # fasterrcnn_resnet50_fpn_v2: batch norm in the FPN and the box head
        "conv_gain": 1.3,
        "fpn_bn_var": 3.0,  # the FPN layer blocks see the sum of the top-down path
        "box_head_bn_var": 9.0,
        "zero_sum_head_convs": True,
        "zero_sum_gain": 1.4,
        "rpn_moment": 0.6,
        "box_moment": 0.36,
        "cls_background_bias": 12.5,
    },
    "mobilenet_v3_fpn": {  # both MobileNetV3 models (identical layouts)
        "conv_gain": float(np.sqrt(2.0)),  # 1.3 fades out over MobileNetV3, 1.6 explodes
        "fpn_bn_var": 1.0,
        "box_head_bn_var": 1.0,
        "zero_sum_head_convs": False,
        "zero_sum_gain": 1.0,
        "rpn_moment": 0.66,
        "box_moment": 0.32,
        "cls_background_bias": 16.5,
    },
}
# Per-model overrides (same layout, other transform / RPN settings): the 320 model sees a
# 320-pixel image and keeps only 150 proposals, so it needs a lower background bias.
MODEL_OVERRIDES = {
    "fasterrcnn_mobilenet_v3_large_320_fpn": {"cls_background_bias": 12.0},
}

RPN_LOGIT_STD = 2.5
RPN_LOGIT_BIAS = (-1.0, 0.15)  # mean, std
RPN_OWN_WEIGHT = 0.3
RPN_DELTA_STD = 0.1
CLS_LOGIT_STD = 3.0
CLS_FOREGROUND_BIAS_STD = 0.5
BOX_DELTA_STD = 1.0  # before torchvision's BoxCoder weights (10, 10, 5, 5)


def family(entries):
    keys = {key for key, _, _ in entries}
    if "backbone.body.layer1.0.conv1.weight" in keys:
        return "resnet50_fpn_v2" if "roi_heads.box_head.0.0.weight" in keys else "resnet50_fpn"
    if "backbone.body.0.0.weight" in keys:
        return "mobilenet_v3_fpn"
    raise ValueError("unknown architecture")


def config(entries, model=None):
    """The scales used for a layout (its architecture family, then the model's overrides)."""
    name = family(entries)
    if name == "mobilenet_v3_fpn" and model not in MODEL_OVERRIDES and model != "fasterrcnn_mobilenet_v3_large_fpn":
        raise ValueError(f"the MobileNetV3 layouts are identical: pass the model name (got {model!r})")
    cfg = dict(FAMILIES[name])
    cfg.update(MODEL_OVERRIDES.get(model, {}))
    return cfg


class Layout(list):
    """[(key, shape tuple, dtype str)] in state-dict order, with the model name as ``.model``."""

    model = None


def load_layout(model):
    """The ordered [(key, shape tuple, dtype str)] of ``layouts/<model>.json`` (a Layout)."""
    with open(os.path.join(LAYOUT_DIR, model + ".json")) as f:
        doc = json.load(f)
    return normalize_layout(doc)


def normalize_layout(layout, model=None):
    model = model or getattr(layout, "model", None)
    if isinstance(layout, dict):
        model = model or layout.get("model")
        layout = layout["state_dict"]
    out = Layout()
    out.model = model
    for entry in layout:
        if isinstance(entry, dict):
            out.append((entry["key"], tuple(entry["shape"]), entry["dtype"]))
        else:
            key, shape, dtype = entry
            out.append((key, tuple(shape), str(dtype)))
    return out


def _rng(seed, key):
    return np.random.default_rng([int(seed), zlib.crc32(key.encode("utf-8"))])


def _is_residual_end_bn(prefix):
    """The batch norm closing a residual branch (its output is added to the shortcut)."""
    if re.search(r"\.layer\d\.\d+\.bn3$", prefix):  # ResNet bottleneck (torchvision resnet50)
        return True
    return False


def _bn_tensor(leaf, prefix, shape, rng, mobilenet_residual_end):
    n = shape[0] if shape else 1
    if leaf == "weight":
        if _is_residual_end_bn(prefix) or prefix in mobilenet_residual_end:
            return rng.uniform(0.15, 0.45, shape)
        return rng.uniform(0.5, 1.5, shape)
    if leaf == "bias":
        return rng.normal(0.0, 0.2, shape)
    if leaf == "running_mean":
        return rng.normal(0.0, 0.25, shape)
    if leaf == "running_var":
        return rng.uniform(0.6, 1.6, shape)
    raise KeyError(f"unexpected batch-norm tensor {prefix}.{leaf} ({n})")


def _mobilenet_residual_end(keys):
    """Last batch norm of each MobileNetV3 inverted-residual block that has a shortcut.

    torchvision's InvertedResidual uses the shortcut when stride 1 and in == out channels; its
    last layer is the (linear) projection ``block.<last>``. We cannot see strides in a layout, so
    we treat every block whose projection output equals its input channels as residual.
    """
    blocks = collections.defaultdict(dict)
    for key, shape, _ in keys:
        m = re.match(r"(.*\.body\.\d+)\.block\.(\d+)\.0\.weight$", key)
        if m and len(shape) == 4:
            blocks[m.group(1)][int(m.group(2))] = shape
    out = set()
    for block, convs in blocks.items():
        first, last = convs[min(convs)], convs[max(convs)]
        in_channels = first[0] * first[1] if first[1] == 1 else first[1]  # depthwise first conv
        if last[0] == in_channels and len(convs) > 1:
            out.add(f"{block}.block.{max(convs)}.1")
    return out


def _centered_rows(w):
    """Rows of zero mean: a layer after a ReLU then ignores the mean that the ReLU adds (the same
    for every proposal), and its outputs vary with the proposal rather than with the class."""
    w = w - w.mean(axis=1, keepdims=True)
    return w * np.sqrt(w.shape[1] / (w.shape[1] - 1.0))


def _tensor(key, shape, dtype, seed, bn_prefixes, mobilenet_residual_end, cfg):
    rng = _rng(seed, key)
    prefix, _, leaf = key.rpartition(".")
    if leaf == "num_batches_tracked":
        return np.array(rng.integers(10_000, 500_000), dtype=np.int64).reshape(shape)
    if prefix in bn_prefixes:
        value = _bn_tensor(leaf, prefix, shape, rng, mobilenet_residual_end)
        if leaf == "running_var" and ".fpn.layer_blocks." in prefix:  # v2 only (v1's FPN has no BN)
            value = value * cfg["fpn_bn_var"]
        if leaf == "running_var" and prefix.endswith("roi_heads.box_head.0.1"):  # v2's conv box head
            value = value * cfg["box_head_bn_var"]
        return value

    rpn_moment = cfg["rpn_moment"]
    box_moment = cfg["box_moment"]
    if prefix.endswith("rpn.head.cls_logits"):
        if leaf == "weight":
            # One objectness direction shared by the anchors (plus a little of their own), so
            # that every anchor shape (not the one whose logits happen to vary most) gets into
            # the top proposals.
            shared = rng.normal(0.0, 1.0, (1, shape[1]))
            own = rng.normal(0.0, 1.0, shape[:2])
            w = (shared + RPN_OWN_WEIGHT * own) / np.sqrt(1.0 + RPN_OWN_WEIGHT**2)
            w = w * RPN_LOGIT_STD / np.sqrt(shape[1] * rpn_moment)
            return _centered_rows(w).reshape(shape)
        return rng.normal(RPN_LOGIT_BIAS[0], RPN_LOGIT_BIAS[1], shape)
    if prefix.endswith("rpn.head.bbox_pred"):
        if leaf == "weight":
            w = rng.normal(0.0, RPN_DELTA_STD / np.sqrt(shape[1] * rpn_moment), shape[:2])
            return _centered_rows(w).reshape(shape)
        return rng.normal(0.0, 0.02, shape)
    if prefix.endswith("box_predictor.cls_score"):
        if leaf == "weight":
            return _centered_rows(rng.normal(0.0, CLS_LOGIT_STD / np.sqrt(shape[1] * box_moment), shape))
        bias = rng.normal(0.0, CLS_FOREGROUND_BIAS_STD, shape)
        bias[0] += cfg["cls_background_bias"]
        return bias
    if prefix.endswith("box_predictor.bbox_pred"):
        if leaf == "weight":
            return rng.normal(0.0, BOX_DELTA_STD / np.sqrt(shape[1] * box_moment), shape)
        return rng.normal(0.0, 0.05, shape)

    if leaf == "weight" and len(shape) == 4 and cfg["zero_sum_head_convs"] and (
        re.search(r"roi_heads\.box_head\.\d+\.0$", prefix) or re.search(r"rpn\.head\.conv\.\d+\.0$", prefix)
    ):
        # v2's convolutional heads: 3 x 3 kernels of zero sum, which ignore the per-channel
        # constant part of their input (mostly an FPN-level offset) and respond to structure.
        fan_in = shape[1] * shape[2] * shape[3]
        w = rng.normal(0.0, cfg["conv_gain"] / np.sqrt(fan_in), shape)
        w -= w.mean(axis=(2, 3), keepdims=True)
        return w * np.sqrt(9.0 / 8.0) * cfg["zero_sum_gain"]
    if leaf == "weight" and len(shape) == 4:  # convolution [out, in / groups, kh, kw]
        fan_in = shape[1] * shape[2] * shape[3]
        linear = ".fpn." in key and (prefix + ".1") not in bn_prefixes and prefix[:-2] + ".1" not in bn_prefixes
        gain = 1.0 if linear else cfg["conv_gain"]
        return rng.normal(0.0, gain / np.sqrt(fan_in), shape)
    if leaf == "weight" and len(shape) == 2 and (prefix.endswith("box_head.fc6") or prefix.endswith("box_head.5")):
        # First fully connected layer of the box head, on RoI features [256 x 7 x 7] flattened:
        # zero sum over the 7 x 7 bins of each input channel, so that it ignores the features'
        # per-channel constant part (which differs mostly by FPN level, not by object) and
        # responds to the structure inside the RoI.
        channels = shape[1] // 49
        w = rng.normal(0.0, np.sqrt(2.0 / shape[1]), (shape[0], channels, 49))
        w -= w.mean(axis=2, keepdims=True)
        return (w * np.sqrt(49.0 / 48.0)).reshape(shape)
    if leaf == "weight" and len(shape) == 2:  # fully connected [out, in]
        return _centered_rows(rng.normal(0.0, np.sqrt(2.0 / shape[1]), shape))
    if leaf == "bias":
        return rng.normal(0.0, 0.05, shape)
    raise KeyError(f"no rule for {key} {shape} {dtype}")


def make_state_dict(layout, seed=DEFAULT_SEED, model=None):
    """OrderedDict key -> np.ndarray (float32, or int64 for num_batches_tracked), in layout order.

    ``layout``: ``load_layout(model)``, the JSON document of ``layouts/<model>.json``, or a list
    of (key, shape, dtype); ``model`` (the torchvision builder name) is needed only when the
    layout does not carry it and it is a MobileNetV3 one (both MobileNetV3 models share a layout).
    """
    entries = normalize_layout(layout, model)
    bn_prefixes = {key[: -len(".running_mean")] for key, _, _ in entries if key.endswith(".running_mean")}
    mobilenet_residual_end = _mobilenet_residual_end(entries)
    cfg = config(entries, entries.model)
    state = collections.OrderedDict()
    for key, shape, dtype in entries:
        value = np.asarray(_tensor(key, shape, dtype, seed, bn_prefixes, mobilenet_residual_end, cfg))
        value = value.astype(np.dtype(dtype)).reshape(shape)
        state[key] = value
    return state


def state_digest(state):
    """sha256 over the keys, dtypes, shapes and bytes, in order (to check a regenerated state)."""
    import hashlib

    digest = hashlib.sha256()
    for key, value in state.items():
        value = np.ascontiguousarray(value)
        digest.update(f"{key}:{value.dtype.str}:{value.shape};".encode("utf-8"))
        digest.update(value.astype(value.dtype.newbyteorder("<")).tobytes())
    return digest.hexdigest()


def load_writer():
    spec = importlib.util.spec_from_file_location("torch_checkpoint_writer", os.path.normpath(WRITER_PATH))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_checkpoint(model, path, seed=DEFAULT_SEED):
    state = make_state_dict(load_layout(model), seed, model)
    load_writer().write_zip_checkpoint(path, state)
    return state


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=MODELS)
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    state = write_checkpoint(args.model, args.out, args.seed)
    print(f"{args.model}: {len(state)} tensors, seed {args.seed}, digest {state_digest(state)} -> {args.out}")


if __name__ == "__main__":
    main()
