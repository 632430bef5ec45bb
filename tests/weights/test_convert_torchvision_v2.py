"""torchvision fasterrcnn_resnet50_fpn_v2 → rcnn_zoo resnet50_fpn_v2: every tensor lands in the
right place with the right layout, checked layer by layer against NumPy re-implementations of
PyTorch's (NCHW) layers. No torch needed (the last test runs only where torchvision is installed)."""

import importlib.util

import numpy as np
import pytest

from rcnn_zoo import FasterRCNN
from rcnn_zoo.convert import ConversionError, convert_state_dict, get_converter
from rcnn_zoo.convert import torchvision_resnet50_fpn_v2 as tv2

# Measured with torchvision 0.28: sum(p.numel() for p in fasterrcnn_resnet50_fpn_v2().parameters()),
# equal to the COCO_V1 weights' published meta["num_params"]. Every BatchNorm2d's weight and bias
# are parameters here (running statistics and num_batches_tracked are buffers).
TORCHVISION_NUM_PARAMS = 43712278
TORCHVISION_NUM_KEYS = 404  # len(model.state_dict()), num_batches_tracked included
BN_EPSILON = 1e-5


def _random_state_dict(num_outputs=91, seed=0):
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in tv2.state_dict_shapes(num_outputs).items():
        if key.endswith("num_batches_tracked"):
            state[key] = np.asarray(7, np.int64)
        elif key.endswith("running_var"):
            state[key] = rng.uniform(0.05, 2.0, shape).astype(np.float32)
        elif key.endswith(".weight") and len(shape) == 1:  # batch-norm gamma
            state[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:
            state[key] = (0.05 * rng.standard_normal(shape)).astype(np.float32)
    return state


@pytest.fixture(scope="module")
def small_state():
    """A state dict of a 2-class (3 outputs) torchvision v2 model; copy before changing it."""
    return _random_state_dict(num_outputs=3, seed=5)


@pytest.fixture(scope="module")
def converted():
    state = _random_state_dict()
    arguments = {**tv2.model_arguments(90), "image_min_size": 96, "image_max_size": 128}
    model = FasterRCNN(**arguments)
    convert_state_dict("torchvision_fasterrcnn_resnet50_fpn_v2", state, model=model)
    return state, model


def _conv_nchw(x, weight, bias=None, padding=0):
    """PyTorch Conv2d (stride 1): x [N,C,H,W], weight [O,C,kh,kw] → [N,O,H',W'] (float64)."""
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    kh, kw = weight.shape[2:]
    h, w = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    out = np.zeros((x.shape[0], weight.shape[0], h, w), np.float64)
    for dy in range(kh):
        for dx in range(kw):
            out += np.einsum("nchw,oc->nohw", x[:, :, dy : dy + h, dx : dx + w], weight[:, :, dy, dx])
    if bias is not None:
        out += bias[None, :, None, None]
    return out


def _bn_nchw(x, state, prefix):
    """PyTorch BatchNorm2d in eval mode, ε = 1e-5."""
    scale = state[prefix + ".weight"] / np.sqrt(state[prefix + ".running_var"].astype(np.float64) + BN_EPSILON)
    shift = state[prefix + ".bias"] - state[prefix + ".running_mean"] * scale
    return x * scale[None, :, None, None] + shift[None, :, None, None]


def _nhwc(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1), np.float32)


def test_key_listing_matches_torchvision_parameter_count():
    shapes = tv2.state_dict_shapes(91)
    assert len(shapes) == TORCHVISION_NUM_KEYS
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    params = sum(int(np.prod(shape)) for key, shape in shapes.items() if not key.endswith(buffers))
    assert params == TORCHVISION_NUM_PARAMS
    assert shapes["roi_heads.box_head.5.weight"] == (1024, 256 * 7 * 7)
    assert shapes["roi_heads.box_head.3.0.weight"] == (256, 256, 3, 3)
    assert shapes["backbone.fpn.inner_blocks.3.0.weight"] == (256, 2048, 1, 1)
    assert "backbone.fpn.inner_blocks.3.0.bias" not in shapes  # conv before BN: no bias
    assert shapes["rpn.head.conv.1.0.bias"] == (256,)
    assert shapes["backbone.body.layer4.0.downsample.1.num_batches_tracked"] == ()
    assert len(tv2.state_dict_shapes(91, buffers=False)) == TORCHVISION_NUM_KEYS - 65  # 65 BNs


def test_registered_with_model_arguments():
    converter = get_converter("torchvision_fasterrcnn_resnet50_fpn_v2")
    assert get_converter("torchvision_v2") is converter
    assert converter.options == {"bn_epsilon": 1e-5}
    arguments = converter.model_arguments(90)
    assert arguments["num_classes"] == 90 and arguments["backbone"] == "resnet50_fpn_v2"
    assert arguments["rpn_conv_depth"] == 2 and arguments["roi_head_type"] == "conv_fc"
    assert arguments["roi_head_convs"] == [256, 256, 256, 256] and arguments["roi_head_dim"] == 1024
    assert tv2.checkpoint_num_classes({"roi_heads.box_predictor.cls_score.weight": np.zeros((91, 1024))}) == 90


def test_trunk_convs_and_batch_norm(converted):
    state, model = converted
    layer = model.backbone.get_layer("conv3_block2_2_conv")
    np.testing.assert_array_equal(layer.kernel.numpy(), state["backbone.body.layer2.1.conv2.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(layer.bias.numpy(), 0.0)
    bn = model.backbone.get_layer("conv2_block1_0_bn")
    x = np.random.default_rng(1).standard_normal((2, 256, 3, 4))
    ours = bn(_nhwc(x), training=False).numpy()
    np.testing.assert_allclose(ours, _nhwc(_bn_nchw(x, state, "backbone.body.layer1.0.downsample.1")), rtol=1e-5, atol=1e-5)


def test_fpn_lateral_and_output_conv_bn(converted):
    state, model = converted
    rng = np.random.default_rng(2)
    c3 = rng.standard_normal((1, 512, 4, 5))
    conv, bn = model.backbone.get_layer("fpn_inner3"), model.backbone.get_layer("fpn_inner3_bn")
    assert not conv.use_bias
    expected = _bn_nchw(_conv_nchw(c3, state["backbone.fpn.inner_blocks.1.0.weight"]), state, "backbone.fpn.inner_blocks.1.1")
    ours = bn(conv(_nhwc(c3)), training=False).numpy()
    np.testing.assert_allclose(ours, _nhwc(expected), rtol=1e-4, atol=1e-4)

    merged = rng.standard_normal((1, 256, 4, 5))
    conv, bn = model.backbone.get_layer("fpn_layer5"), model.backbone.get_layer("fpn_layer5_bn")
    expected = _bn_nchw(
        _conv_nchw(merged, state["backbone.fpn.layer_blocks.3.0.weight"], padding=1), state, "backbone.fpn.layer_blocks.3.1"
    )
    np.testing.assert_allclose(bn(conv(_nhwc(merged)), training=False).numpy(), _nhwc(expected), rtol=1e-4, atol=1e-4)


def test_two_conv_rpn_head_equals_pytorch_layout(converted):
    state, model = converted
    feature = np.random.default_rng(3).standard_normal((1, 256, 5, 6))
    hidden = feature
    for i in range(2):
        prefix = f"rpn.head.conv.{i}.0"
        hidden = np.maximum(_conv_nchw(hidden, state[prefix + ".weight"], state[prefix + ".bias"], 1), 0)
    logits = _conv_nchw(hidden, state["rpn.head.cls_logits.weight"], state["rpn.head.cls_logits.bias"])
    deltas = _conv_nchw(hidden, state["rpn.head.bbox_pred.weight"], state["rpn.head.bbox_pred.bias"])
    # torchvision's concat_box_prediction_layers: [N, A·C, H, W] → [N, H·W·A, C].
    expected_logits = logits.reshape(1, 3, 1, 5, 6).transpose(0, 3, 4, 1, 2).reshape(1, -1)
    expected_deltas = deltas.reshape(1, 3, 4, 5, 6).transpose(0, 3, 4, 1, 2).reshape(1, -1, 4)
    ours_logits, ours_deltas, _, _ = model.rpn.head([_nhwc(feature)])
    np.testing.assert_allclose(ours_logits.numpy(), expected_logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours_deltas.numpy(), expected_deltas, rtol=1e-4, atol=1e-4)


def test_conv_fc_box_head_and_predictor(converted):
    state, model = converted
    pooled = np.random.default_rng(4).standard_normal((3, 256, 7, 7))  # PyTorch RoIAlign output
    x = pooled
    for i in range(4):
        prefix = f"roi_heads.box_head.{i}"
        x = np.maximum(_bn_nchw(_conv_nchw(x, state[prefix + ".0.weight"], padding=1), state, prefix + ".1"), 0)
    x = x.reshape(3, -1)  # nn.Flatten over (C, H, W)
    x = np.maximum(x @ state["roi_heads.box_head.5.weight"].T + state["roi_heads.box_head.5.bias"], 0)
    hidden = model.roi_heads.box_head(_nhwc(pooled), training=False).numpy()
    np.testing.assert_allclose(hidden, x, rtol=1e-4, atol=1e-4 * np.abs(x).max())

    predictor = "roi_heads.box_predictor."
    logits = x @ state[predictor + "cls_score.weight"].T + state[predictor + "cls_score.bias"]
    deltas = x @ state[predictor + "bbox_pred.weight"].T + state[predictor + "bbox_pred.bias"]
    ours_logits, ours_deltas = model.roi_heads.box_predictor(hidden)
    np.testing.assert_allclose(ours_logits.numpy(), logits, rtol=1e-4, atol=1e-4 * np.abs(logits).max())
    np.testing.assert_allclose(ours_deltas.numpy(), deltas.reshape(3, 91, 4), rtol=1e-4, atol=1e-4 * np.abs(deltas).max())


def test_converted_model_runs_on_two_image_sizes(converted):
    _, model = converted
    rng = np.random.default_rng(5)
    for height, width in ((96, 128), (110, 90)):
        image = rng.uniform(0, 255, (1, height, width, 3)).astype(np.float32)
        out = {k: v.numpy() for k, v in model(image, training=False).items()}
        assert out["boxes"].shape == (1, 100, 4)
        assert np.all(np.isfinite(out["scores"])) and np.all(np.isfinite(out["boxes"]))


def test_class_count_change_leaves_predictor_initialised(small_state):
    arguments = {**tv2.model_arguments(4), "image_min_size": 64, "image_max_size": 64}
    model = FasterRCNN(**arguments)
    with pytest.warns(UserWarning, match="box_predictor"):
        convert_state_dict("torchvision_v2", small_state, model=model)
    np.testing.assert_array_equal(
        model.rpn.head.convs[1].bias.numpy(), small_state["rpn.head.conv.1.0.bias"]
    )


def test_missing_wrong_and_extra_keys_are_reported(small_state):
    state = dict(small_state)
    del state["roi_heads.box_head.2.1.running_var"]
    with pytest.raises(ConversionError, match=r"box_head\.2\.1\.running_var"):
        tv2.layer_weights(state)
    state = dict(small_state)
    state["backbone.fpn.layer_blocks.0.0.weight"] = np.zeros((256, 256, 1, 1), np.float32)
    with pytest.raises(ConversionError, match="layer_blocks.0.0.weight.*expected"):
        tv2.layer_weights(state)
    state = dict(small_state)
    state["roi_heads.mask_head.0.0.weight"] = np.zeros((1,), np.float32)
    with pytest.warns(UserWarning, match="mask_head"):
        tv2.layer_weights(state)


def test_v1_checkpoint_is_refused_clearly():
    from rcnn_zoo.convert import torchvision_resnet50_fpn as tv1  # noqa: PLC0415

    state = {k: np.zeros(s, np.float32) for k, s in tv1.state_dict_shapes(3, new_names=True).items()}
    with pytest.raises(ConversionError, match="no 'backbone.fpn.inner_blocks.0.1.weight'"):
        tv2.layer_weights(state)


@pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or importlib.util.find_spec("torchvision") is None,
    reason="needs torch and torchvision",
)
def test_against_torchvision_model():  # pragma: no cover - torch is not installed in CI
    import torch
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.detection.fasterrcnn_resnet50_fpn_v2(
        weights=None, weights_backbone=None, num_classes=91
    ).eval()
    state = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    model = FasterRCNN(**tv2.model_arguments(90))
    convert_state_dict("torchvision_v2", state, model=model)
    x = np.random.default_rng(0).standard_normal((1, 3, 256, 320)).astype(np.float32)
    with torch.no_grad():
        features = reference.backbone(torch.from_numpy(x))
    ours = model.backbone(_nhwc(x))
    for torch_name, our_name in zip(["0", "1", "2", "3", "pool"], ["P2", "P3", "P4", "P5", "P6"]):
        expected = features[torch_name].numpy().transpose(0, 2, 3, 1)
        np.testing.assert_allclose(ours[our_name].numpy(), expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
