"""torchvision fasterrcnn_resnet50_fpn → rcnn_zoo resnet50_fpn: every tensor lands in the right
place with the right layout, checked against NumPy re-implementations of PyTorch's layers."""

import importlib.util

import numpy as np
import pytest

from rcnn_zoo import FasterRCNN
from rcnn_zoo.convert import ConversionError, convert_state_dict
from rcnn_zoo.convert import torchvision_resnet50_fpn as tv

# torchvision's published parameter count of fasterrcnn_resnet50_fpn (COCO_V1 weights meta):
# FrozenBatchNorm2d tensors are buffers, everything else is a parameter.
TORCHVISION_NUM_PARAMS = 41755286


def _random_state_dict(num_outputs=91, seed=0):
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in tv.state_dict_shapes(num_outputs).items():
        if key.endswith("running_var"):
            state[key] = rng.uniform(0.05, 2.0, shape).astype(np.float32)
        else:
            state[key] = (0.05 * rng.standard_normal(shape)).astype(np.float32)
    return state


@pytest.fixture(scope="module")
def small_state():
    """A state dict of a 2-class (3 outputs) torchvision model; copy before changing it."""
    return _random_state_dict(num_outputs=3, seed=5)


@pytest.fixture(scope="module")
def converted():
    state = _random_state_dict()
    arguments = {**tv.model_arguments(90), "image_min_size": 96, "image_max_size": 128}
    model = FasterRCNN(**arguments)
    convert_state_dict("torchvision", state, model=model, bn_epsilon=0.0)
    return state, model


def _conv_nchw(x, weight, bias, padding):
    """PyTorch Conv2d (stride 1): x [N,C,H,W], weight [O,C,kh,kw] → [N,O,H',W']."""
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    kh, kw = weight.shape[2:]
    h, w = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    out = np.zeros((x.shape[0], weight.shape[0], h, w), np.float64)
    for dy in range(kh):
        for dx in range(kw):
            out += np.einsum("nchw,oc->nohw", x[:, :, dy : dy + h, dx : dx + w], weight[:, :, dy, dx])
    return out + bias[None, :, None, None]


def test_key_listing_matches_torchvision_parameter_count():
    shapes = tv.state_dict_shapes(91)
    params = sum(
        int(np.prod(shape)) for key, shape in shapes.items() if ".bn" not in key and "downsample.1" not in key
    )
    assert params == TORCHVISION_NUM_PARAMS
    assert shapes["roi_heads.box_head.fc6.weight"] == (1024, 12544)
    assert shapes["backbone.body.layer3.5.conv2.weight"] == (256, 256, 3, 3)
    assert shapes["backbone.body.layer4.0.downsample.0.weight"] == (2048, 1024, 1, 1)


def test_conv_kernels_are_transposed_to_hwio(converted):
    state, model = converted
    layer = model.backbone.get_layer("conv3_block2_2_conv")
    weight = state["backbone.body.layer2.1.conv2.weight"]
    kernel = layer.kernel.numpy()
    assert kernel.shape == (3, 3, 128, 128)
    assert kernel[0, 2, 5, 7] == weight[7, 5, 0, 2]
    np.testing.assert_array_equal(kernel, weight.transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(layer.bias.numpy(), 0.0)
    shortcut = model.backbone.get_layer("conv4_block1_0_conv").kernel.numpy()
    np.testing.assert_array_equal(shortcut[0, 0], state["backbone.body.layer3.0.downsample.0.weight"][:, :, 0, 0].T)
    stem = model.backbone.get_layer("conv1_conv").kernel.numpy()
    np.testing.assert_array_equal(stem, state["backbone.body.conv1.weight"].transpose(2, 3, 1, 0))


def test_fpn_convs(converted):
    state, model = converted
    inner = model.backbone.get_layer("fpn_inner3")
    np.testing.assert_array_equal(inner.kernel.numpy()[0, 0], state["backbone.fpn.inner_blocks.1.weight"][:, :, 0, 0].T)
    np.testing.assert_array_equal(inner.bias.numpy(), state["backbone.fpn.inner_blocks.1.bias"])
    outer = model.backbone.get_layer("fpn_layer5")
    np.testing.assert_array_equal(outer.kernel.numpy(), state["backbone.fpn.layer_blocks.3.weight"].transpose(2, 3, 1, 0))


def test_frozen_batch_norm_with_epsilon_zero(converted):
    state, model = converted
    layer = model.backbone.get_layer("conv2_block1_0_bn")
    prefix = "backbone.body.layer1.0.downsample.1."
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 256)).astype(np.float32)
    ours = layer(x, training=False).numpy()
    scale = state[prefix + "weight"] / np.sqrt(state[prefix + "running_var"].astype(np.float64))
    reference = (x - state[prefix + "running_mean"]) * scale + state[prefix + "bias"]
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)
    assert layer.epsilon == pytest.approx(1.001e-5)  # folded into gamma, layer unchanged


def test_rpn_head_equals_pytorch_layout(converted):
    state, model = converted
    rng = np.random.default_rng(2)
    feature = rng.standard_normal((1, 256, 5, 6)).astype(np.float32)  # NCHW as in PyTorch
    hidden = np.maximum(_conv_nchw(feature, state["rpn.head.conv.weight"], state["rpn.head.conv.bias"], 1), 0)
    logits = _conv_nchw(hidden, state["rpn.head.cls_logits.weight"], state["rpn.head.cls_logits.bias"], 0)
    deltas = _conv_nchw(hidden, state["rpn.head.bbox_pred.weight"], state["rpn.head.bbox_pred.bias"], 0)
    # torchvision's concat_box_prediction_layers: [N, A·C, H, W] → view(N, A, C, H, W) →
    # permute(0, 3, 4, 1, 2) → [N, H·W·A, C].
    expected_logits = logits.reshape(1, 3, 1, 5, 6).transpose(0, 3, 4, 1, 2).reshape(1, -1)
    expected_deltas = deltas.reshape(1, 3, 4, 5, 6).transpose(0, 3, 4, 1, 2).reshape(1, -1, 4)
    ours_logits, ours_deltas, _, _ = model.rpn.head([feature.transpose(0, 2, 3, 1)])
    np.testing.assert_allclose(ours_logits.numpy(), expected_logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours_deltas.numpy(), expected_deltas, rtol=1e-4, atol=1e-4)


def test_box_head_flattening_and_predictor(converted):
    state, model = converted
    rng = np.random.default_rng(3)
    pooled = rng.standard_normal((4, 256, 7, 7)).astype(np.float32)  # PyTorch RoIAlign output
    head = "roi_heads.box_head."
    x = pooled.reshape(4, -1).astype(np.float64)  # torch flattens C, H, W
    x = np.maximum(x @ state[head + "fc6.weight"].T + state[head + "fc6.bias"], 0)
    x = np.maximum(x @ state[head + "fc7.weight"].T + state[head + "fc7.bias"], 0)
    hidden = model.roi_heads.box_head(pooled.transpose(0, 2, 3, 1)).numpy()
    np.testing.assert_allclose(hidden, x, rtol=1e-4, atol=1e-4)

    predictor = "roi_heads.box_predictor."
    logits = x @ state[predictor + "cls_score.weight"].T + state[predictor + "cls_score.bias"]
    deltas = x @ state[predictor + "bbox_pred.weight"].T + state[predictor + "bbox_pred.bias"]
    ours_logits, ours_deltas = model.roi_heads.box_predictor(hidden)
    np.testing.assert_allclose(ours_logits.numpy(), logits, rtol=1e-4, atol=1e-4)
    # torchvision decodes box_regression.reshape(K, -1, 4): class-major, (dx, dy, dw, dh).
    np.testing.assert_allclose(ours_deltas.numpy(), deltas.reshape(4, 91, 4), rtol=1e-4, atol=1e-4)


def test_converted_model_runs(converted):
    _, model = converted
    image = np.random.default_rng(4).uniform(0, 255, (1, 96, 128, 3)).astype(np.float32)
    out = {k: v.numpy() for k, v in model(image, training=False).items()}
    assert out["boxes"].shape == (1, 100, 4)
    assert np.all(np.isfinite(out["scores"]))


def test_new_torchvision_key_names_give_the_same_weights(small_state):
    state = small_state
    renamed = {}
    for key, value in state.items():
        for block in ("inner_blocks", "layer_blocks"):
            for i in range(4):
                old = f"backbone.fpn.{block}.{i}."
                if key.startswith(old):
                    key = f"backbone.fpn.{block}.{i}.0." + key[len(old):]
        key = key.replace("rpn.head.conv.", "rpn.head.conv.0.0.")
        renamed[key] = value
    assert set(renamed) == set(tv.state_dict_shapes(3, new_names=True))
    old_layers = tv.layer_weights(state)
    new_layers = tv.layer_weights(renamed)
    assert old_layers.keys() == new_layers.keys()
    for layer, arrays in old_layers.items():
        for name, array in arrays.items():
            np.testing.assert_array_equal(new_layers[layer][name], array)


def test_missing_wrong_and_extra_keys_are_reported(small_state):
    state = dict(small_state)
    del state["backbone.body.layer4.2.bn3.running_var"]
    with pytest.raises(ConversionError, match=r"layer4\.2\.bn3\.running_var"):
        tv.layer_weights(state)
    state = dict(small_state)
    state["rpn.head.cls_logits.weight"] = np.zeros((6, 256, 1, 1), np.float32)
    with pytest.raises(ConversionError, match="cls_logits.weight.*expected"):
        tv.layer_weights(state)
    state = dict(small_state)
    state["roi_heads.mask_head.mask_fcn1.weight"] = np.zeros((1,), np.float32)
    with pytest.warns(UserWarning, match="mask_fcn1"):
        tv.layer_weights(state)


@pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or importlib.util.find_spec("torchvision") is None,
    reason="needs torch and torchvision",
)
def test_against_torchvision_model():  # pragma: no cover - torch is not installed in CI
    import torch
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=91
    ).eval()
    state = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    model = FasterRCNN(**tv.model_arguments(90))
    convert_state_dict("torchvision", state, model=model, bn_epsilon=1e-5)
    image = np.random.default_rng(0).uniform(0, 255, (800, 1216, 3)).astype(np.float32)  # ×32: no padding
    with torch.no_grad():
        tensor = torch.from_numpy(image / 255.0).permute(2, 0, 1)[None]
        normalized, _ = reference.transform(list(tensor))
        features = reference.backbone(normalized.tensors)
    ours, _ = model.preprocess(image[None])
    our_features = model.backbone(ours)
    for torch_name, our_name in zip(["0", "1", "2", "3", "pool"], ["P2", "P3", "P4", "P5", "P6"]):
        np.testing.assert_allclose(
            our_features[our_name].numpy(),
            features[torch_name].numpy().transpose(0, 2, 3, 1),
            rtol=1e-3,
            atol=1e-3,
        )
