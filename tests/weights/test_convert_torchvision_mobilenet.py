"""torchvision fasterrcnn_mobilenet_v3_large_fpn (and _320_fpn) → rcnn_zoo mobilenet_v3_large_fpn:
every tensor lands in the right place with the right layout, checked against NumPy NCHW
re-implementations of PyTorch's layers (depthwise conv, squeeze-excitation, hard-swish)."""

import argparse
import os
import sys

import numpy as np
import pytest

from rcnn_zoo import FasterRCNN
from rcnn_zoo.backbones.mobilenet import INVERTED_RESIDUAL_SETTING, squeeze_channels
from rcnn_zoo.convert import CONVERTERS, ConversionError, convert_state_dict, read_state_dict
from rcnn_zoo.convert.cli import add_convert_parser, run_convert
from rcnn_zoo.models.from_checkpoint import convert_checkpoint
from rcnn_zoo.convert import torchvision_mobilenet_v3_fpn as tv
from rcnn_zoo.convert import torchvision_resnet50_fpn

# torchvision's published parameter count of fasterrcnn_mobilenet_v3_large_fpn and of the _320_fpn
# model (COCO_V1 weights meta, measured with torchvision 0.28): FrozenBatchNorm2d tensors are
# buffers, everything else is a parameter.
TORCHVISION_NUM_PARAMS = 19386354
# state dict keys of the published checkpoints (FrozenBatchNorm2d: no num_batches_tracked);
# a BatchNorm2d model additionally writes 46 num_batches_tracked (330 keys).
TORCHVISION_NUM_KEYS = 284
BN_EPS = 1e-5


def _random_state_dict(num_outputs=91, seed=0):
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in tv.state_dict_shapes(num_outputs).items():
        if key.endswith("running_var"):
            state[key] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        elif key.endswith(".1.weight") and key.startswith("backbone.body."):
            state[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)  # BN gamma
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 10
            scale = 1.0 / np.sqrt(fan_in) if len(shape) > 1 else 0.2
            state[key] = (scale * rng.standard_normal(shape)).astype(np.float32)
    return state


@pytest.fixture(scope="module")
def converted():
    state = _random_state_dict(num_outputs=4, seed=3)
    model = FasterRCNN(**{**tv.model_arguments(3), "image_min_size": 160, "image_max_size": 224})
    convert_state_dict(tv.NAME, state, model=model)
    return state, model


# ---------------------------------------------------------------- NumPy NCHW references
def _conv_nchw(x, weight, bias=None, stride=1, padding=0, groups=1):
    """PyTorch Conv2d: x [N,C,H,W], weight [O, C/groups, kh, kw] → [N,O,H',W'] (float64)."""
    x = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out_c, in_per_group, kh, kw = weight.shape
    h = (x.shape[2] - kh) // stride + 1
    w = (x.shape[3] - kw) // stride + 1
    out = np.zeros((x.shape[0], out_c, h, w), np.float64)
    per_group = out_c // groups
    for g in range(groups):
        xs = x[:, g * in_per_group : (g + 1) * in_per_group]
        ws = weight[g * per_group : (g + 1) * per_group]
        for dy in range(kh):
            for dx in range(kw):
                patch = xs[:, :, dy : dy + stride * (h - 1) + 1 : stride, dx : dx + stride * (w - 1) + 1 : stride]
                out[:, g * per_group : (g + 1) * per_group] += np.einsum("nchw,oc->nohw", patch, ws[:, :, dy, dx])
    if bias is not None:
        out += bias[None, :, None, None]
    return out


def _bn_nchw(x, state, prefix):
    g, b, m, v = (state[f"{prefix}.{n}"].astype(np.float64)[None, :, None, None] for n in tv.BN_TENSORS)
    return (x - m) / np.sqrt(v + BN_EPS) * g + b


def _hardswish(x):
    return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0


def _hardsigmoid(x):
    return np.clip(x + 3.0, 0.0, 6.0) / 6.0


def _run(model, names, x_nchw):
    """Apply the named backbone layers in order to an NCHW array; returns NCHW float64."""
    y = x_nchw.transpose(0, 2, 3, 1).astype(np.float32)
    for name in names:
        y = model.backbone.get_layer(name)(y)
    return np.asarray(y, np.float64).transpose(0, 3, 1, 2)


def _run_se(model, prefix, x_nchw):
    x = x_nchw.transpose(0, 2, 3, 1).astype(np.float32)
    get = model.backbone.get_layer
    scale = get(f"{prefix}_pool")(x)
    for part in ("fc1", "relu", "fc2", "gate"):
        scale = get(f"{prefix}_{part}")(scale)
    return np.asarray(get(f"{prefix}_scale")([x, scale]), np.float64).transpose(0, 3, 1, 2)


# ---------------------------------------------------------------- key listing
def test_key_listing_matches_torchvision_parameter_count():
    shapes = tv.state_dict_shapes(91)
    assert len(shapes) == TORCHVISION_NUM_KEYS
    bn = {
        k for k in shapes
        if k.startswith("backbone.body.") and k.endswith((".1.weight", ".1.bias", "running_mean", "running_var"))
    }
    params = sum(int(np.prod(s)) for k, s in shapes.items() if k not in bn)
    assert params == TORCHVISION_NUM_PARAMS
    assert shapes["backbone.body.4.block.1.0.weight"] == (72, 1, 5, 5)  # depthwise, C1
    assert shapes["backbone.body.4.block.2.fc1.weight"] == (24, 72, 1, 1)  # SE squeeze 72//4 → 24
    assert shapes["backbone.body.1.block.0.0.weight"] == (16, 1, 3, 3)  # no expand in block 1
    assert shapes["backbone.body.16.0.weight"] == (960, 160, 1, 1)
    assert shapes["backbone.fpn.inner_blocks.0.0.weight"] == (256, 160, 1, 1)
    assert shapes["backbone.fpn.inner_blocks.1.0.weight"] == (256, 960, 1, 1)
    assert shapes["rpn.head.cls_logits.weight"] == (15, 256, 1, 1)
    assert shapes["roi_heads.box_head.fc6.weight"] == (1024, 12544)
    old = tv.state_dict_shapes(91, old_names=True)
    assert "backbone.fpn.layer_blocks.1.weight" in old and "rpn.head.conv.weight" in old


def test_squeeze_channels_follow_make_divisible():
    assert [squeeze_channels(s[2]) for s in INVERTED_RESIDUAL_SETTING if s[4]] == [
        24, 32, 32, 120, 168, 168, 240, 240,
    ]


def test_every_tensor_and_every_variable_is_used(converted):
    state, model = converted
    # assign_layer_weights raised if a model variable had been left out; no source key unused:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        weights = tv.layer_weights(state)
    assert "block4_dw_conv" in weights and "block1_expand_conv" not in weights
    # one Keras variable per source tensor (BN: gamma, beta, moving mean and variance)
    assert model.count_params() == sum(int(np.prod(s)) for s in tv.state_dict_shapes(4).values())


# ---------------------------------------------------------------- layouts vs NumPy
def test_depthwise_kernel_layout(converted):
    state, model = converted
    kernel = model.backbone.get_layer("block4_dw_conv").kernel.numpy()
    weight = state["backbone.body.4.block.1.0.weight"]
    assert kernel.shape == (5, 5, 72, 1)
    assert kernel[1, 3, 17, 0] == weight[17, 0, 1, 3]


def test_stem_stride2_symmetric_padding_and_hardswish_match_pytorch(converted):
    state, model = converted
    x = np.random.default_rng(1).standard_normal((1, 3, 13, 11))  # odd sizes: padding matters
    ours = _run(model, ["stem_pad", "stem_conv", "stem_bn", "stem_act"], x)
    ref = _hardswish(_bn_nchw(_conv_nchw(x, state["backbone.body.0.0.weight"], stride=2, padding=1), state, "backbone.body.0.1"))
    assert ours.shape == ref.shape == (1, 16, 7, 6)
    np.testing.assert_allclose(ours, ref, atol=2e-5)


def test_depthwise_stride2_block_matches_pytorch(converted):
    state, model = converted
    x = np.random.default_rng(2).standard_normal((1, 72, 11, 14))
    ours = _run(model, ["block4_dw_pad", "block4_dw_conv", "block4_dw_bn", "block4_dw_act"], x)
    weight = state["backbone.body.4.block.1.0.weight"]
    ref = np.maximum(_bn_nchw(_conv_nchw(x, weight, stride=2, padding=2, groups=72), state, "backbone.body.4.block.1.1"), 0)
    assert ours.shape == ref.shape == (1, 72, 6, 7)
    np.testing.assert_allclose(ours, ref, atol=2e-5)


def test_squeeze_excitation_matches_pytorch(converted):
    state, model = converted
    x = np.random.default_rng(3).standard_normal((1, 120, 5, 6))
    ours = _run_se(model, "block5_se", x)
    p = "backbone.body.5.block.2."
    scale = x.mean(axis=(2, 3), keepdims=True)
    scale = np.maximum(_conv_nchw(scale, state[p + "fc1.weight"], state[p + "fc1.bias"]), 0)
    scale = _hardsigmoid(_conv_nchw(scale, state[p + "fc2.weight"], state[p + "fc2.bias"]))
    np.testing.assert_allclose(ours, x * scale, atol=2e-5)


def test_hardswish_expand_conv_matches_pytorch(converted):
    state, model = converted
    x = np.random.default_rng(4).standard_normal((1, 40, 4, 5))
    ours = _run(model, ["block7_expand_conv", "block7_expand_bn", "block7_expand_act"], x)
    ref = _hardswish(_bn_nchw(_conv_nchw(x, state["backbone.body.7.block.0.0.weight"]), state, "backbone.body.7.block.0.1"))
    np.testing.assert_allclose(ours, ref, atol=2e-5)


def test_fpn_and_rpn_layout(converted):
    state, model = converted
    inner = model.backbone.get_layer("fpn_inner1")
    np.testing.assert_array_equal(inner.kernel.numpy()[0, 0], state["backbone.fpn.inner_blocks.1.0.weight"][:, :, 0, 0].T)
    np.testing.assert_array_equal(
        model.rpn.head.objectness.kernel.numpy()[0, 0], state["rpn.head.cls_logits.weight"][:, :, 0, 0].T
    )
    assert model.rpn.head.deltas.kernel.shape == (1, 1, 256, 60)


def test_converted_detector_runs_on_two_image_sizes(converted):
    _, model = converted
    rng = np.random.default_rng(0)
    for height, width in ((120, 150), (181, 97)):
        images = rng.uniform(0, 255, (1, height, width, 3)).astype("float32")
        out = model.predict(images, verbose=0)
        assert out["boxes"].shape == (1, 100, 4)
        n = int(out["num_detections"][0])
        boxes = out["boxes"][0][:n]
        assert np.isfinite(boxes).all()
        if n:
            assert boxes[:, 2].max() <= width + 1e-3 and boxes[:, 3].max() <= height + 1e-3


# ---------------------------------------------------------------- arguments and refusals
def test_model_arguments_of_both_variants():
    full, low = tv.model_arguments(90), tv.model_arguments(90, low_resolution=True)
    assert full["num_classes"] == 90 and full["backbone"] == "mobilenet_v3_large_fpn"
    assert (full["image_min_size"], full["image_max_size"]) == (800, 1333)
    assert (low["image_min_size"], low["image_max_size"]) == (320, 640)
    assert (low["rpn_pre_nms_top_n_test"], low["rpn_post_nms_top_n_test"]) == (150, 150)
    assert full["rpn_score_threshold"] == low["rpn_score_threshold"] == 0.05
    assert tv.MODEL_ARGUMENTS_320 == {k: v for k, v in low.items() if k != "num_classes"}
    assert CONVERTERS[tv.NAME].model_arguments is tv.model_arguments


def test_backbone_defaults_equal_model_arguments():
    model = FasterRCNN(num_classes=2, backbone="mobilenet_v3_large_fpn")
    for key, value in tv.MODEL_ARGUMENTS.items():
        if key in model.hyperparameters():
            expected = value
            got = model.hyperparameters()[key]
            if isinstance(value, list):
                expected = [tuple(v) if isinstance(v, list) else v for v in value]
                got = [tuple(v) if isinstance(v, (list, tuple)) else v for v in got]
            assert got == expected, key


def test_class_count_and_wrong_family_are_checked():
    state = _random_state_dict(num_outputs=3, seed=1)
    assert tv.checkpoint_num_classes(state) == 2
    resnet = {k: np.zeros(s, np.float32) for k, s in torchvision_resnet50_fpn.state_dict_shapes(3).items()}
    with pytest.raises(ConversionError, match="mobilenet"):
        tv.checkpoint_num_classes(resnet)
    state["backbone.body.4.block.1.0.weight"] = np.zeros((72, 1, 3, 3), np.float32)
    with pytest.raises(ConversionError, match="backbone.body.4.block.1.0.weight"):
        tv.layer_weights(state)


def test_other_batch_norm_epsilon_is_folded():
    state = _random_state_dict(num_outputs=3, seed=2)
    a = tv.layer_weights(state, bn_epsilon=1e-5)["block2_dw_bn"]
    b = tv.layer_weights(state, bn_epsilon=1e-3)["block2_dw_bn"]
    np.testing.assert_array_equal(a["gamma"], state["backbone.body.2.block.1.1.weight"])
    var = state["backbone.body.2.block.1.1.running_var"].astype(np.float64)
    np.testing.assert_allclose(b["gamma"] / np.sqrt(var + 1e-5), a["gamma"] / np.sqrt(var + 1e-3), rtol=1e-6)


def test_convert_command_takes_the_mobilenet_family(tmp_path):
    """``rcnn-zoo convert --from torchvision_mobilenet`` on a .pth written by the project's writer
    with torchvision's real key layout; the written weights load into the preset's model."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "parity"))
    import synthetic_checkpoint  # noqa: PLC0415 (a test helper folder, not a package)

    source = tmp_path / "fasterrcnn_mobilenet_v3_large_320_fpn.pth"
    synthetic_checkpoint.write_checkpoint("fasterrcnn_mobilenet_v3_large_320_fpn", str(source))
    output = tmp_path / "mobilenet.weights.h5"
    parser = argparse.ArgumentParser(prog="rcnn-zoo")
    add_convert_parser(parser.add_subparsers(dest="command"), convert_checkpoint)
    args = parser.parse_args(["convert", "--from", "torchvision_mobilenet", "--input", str(source),
                              "--output", str(output)])
    assert run_convert(args) == 0
    model = FasterRCNN(weights=str(output), **tv.model_arguments(90, low_resolution=True))
    state = read_state_dict(str(source))
    np.testing.assert_allclose(
        model.roi_heads.box_predictor.get_weights()[0], state["roi_heads.box_predictor.cls_score.weight"].T, rtol=1e-6
    )
