"""ConvFCBoxHead (torchvision's FastRCNNConvFCHead, 4conv1fc): configuration, shapes, and one
conv + BN + ReLU + FC checked against a NumPy re-implementation; RPNHead with conv_depth."""

import keras
import numpy as np
import pytest

from rcnn_zoo.heads import ConvFCBoxHead, RPNHead


def _conv3x3_nhwc(x, kernel):
    """'same' 3×3 conv, stride 1: x [N,H,W,C], kernel [3,3,C,O] → [N,H,W,O] (float64)."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))).astype(np.float64)
    h, w = x.shape[1:3]
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],), np.float64)
    for dy in range(3):
        for dx in range(3):
            out += np.einsum("nhwc,co->nhwo", padded[:, dy : dy + h, dx : dx + w], kernel[dy, dx])
    return out


def test_config_round_trip():
    head = ConvFCBoxHead((8, 16), (32, 12), norm=True, dropout=0.1, name="box_head")
    config = head.get_config()
    assert config["conv_channels"] == [8, 16] and config["fc_dims"] == [32, 12]
    clone = ConvFCBoxHead.from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert isinstance(restored, ConvFCBoxHead) and restored.get_config() == config


def test_default_is_torchvision_v2_head_and_output_shape():
    head = ConvFCBoxHead(name="box_head")
    head.build((None, 7, 7, 256))
    assert head.conv_channels == (256, 256, 256, 256) and head.fc_dims == (1024,)
    out = head(np.zeros((3, 7, 7, 256), np.float32))
    assert out.shape == (3, 1024)
    assert head.compute_output_shape((3, 7, 7, 256)) == (3, 1024)
    names = sorted(v.path for v in head.weights)
    assert "box_head/conv1/kernel" in names and "box_head/bn4/moving_variance" in names
    assert "box_head/fc1/kernel" in names and "box_head/conv1/bias" not in names  # BN: no bias
    assert head.fcs[0].kernel.shape == (7 * 7 * 256, 1024)


def test_one_conv_bn_relu_fc_against_numpy():
    rng = np.random.default_rng(0)
    head = ConvFCBoxHead((6,), (5,), name="h")
    head.build((None, 4, 3, 2))
    kernel = rng.standard_normal((3, 3, 2, 6)).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 1.5, 6), rng.standard_normal(6)
    mean, var = rng.standard_normal(6), rng.uniform(0.1, 2.0, 6)
    fc_kernel, fc_bias = rng.standard_normal((4 * 3 * 6, 5)), rng.standard_normal(5)
    head.convs[0].kernel.assign(kernel)
    bn = head.norms[0]
    for variable, value in zip((bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance), (gamma, beta, mean, var)):
        variable.assign(value.astype(np.float32))
    head.fcs[0].kernel.assign(fc_kernel.astype(np.float32))
    head.fcs[0].bias.assign(fc_bias.astype(np.float32))

    x = rng.standard_normal((2, 4, 3, 2)).astype(np.float32)
    y = _conv3x3_nhwc(x, kernel)
    y = (y - mean) / np.sqrt(var + head.epsilon) * gamma + beta
    y = np.maximum(y, 0.0).reshape(2, -1)  # (y, x, channel) flatten
    expected = np.maximum(y @ fc_kernel + fc_bias, 0.0)
    np.testing.assert_allclose(head(x, training=False).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert head.epsilon == pytest.approx(1.001e-5)


def test_without_norm_the_convs_have_bias():
    head = ConvFCBoxHead((4,), (3,), norm=False)
    head.build((None, 7, 7, 2))
    assert head.convs[0].bias is not None and not head.norms
    assert head(np.ones((1, 7, 7, 2), np.float32)).shape == (1, 3)


def test_needs_a_fully_connected_layer():
    with pytest.raises(ValueError, match="fc_dims"):
        ConvFCBoxHead((4,), ())


def test_rpn_head_conv_depth():
    shallow = RPNHead(3, 8, name="rpn_head")
    shallow.build([(None, None, None, 4)])
    assert [v.path for v in shallow.weights][:2] == ["rpn_head/conv/kernel", "rpn_head/conv/bias"]
    assert "conv_depth" not in shallow.get_config()  # depth-1 config unchanged

    deep = RPNHead(3, 8, conv_depth=2, name="rpn_head")
    deep.build([(None, None, None, 4)])
    paths = [v.path for v in deep.weights]
    assert "rpn_head/conv/kernel" in paths and "rpn_head/conv2/kernel" in paths
    assert deep.convs[1].kernel.shape == (3, 3, 8, 8)
    assert RPNHead.from_config(deep.get_config()).conv_depth == 2
    features = np.random.default_rng(0).standard_normal((1, 5, 6, 4)).astype(np.float32)
    logits, _, _, _ = deep([features])
    hidden = deep.convs[1](deep.convs[0](features))
    np.testing.assert_allclose(
        logits.numpy(), deep.objectness(hidden).numpy().reshape(1, -1), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="conv_depth"):
        RPNHead(3, 8, conv_depth=0)
