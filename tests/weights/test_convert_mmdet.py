"""MMDetection 2.x faster_rcnn_r50_fpn → rcnn_zoo: background-last classes reordered, anchors as
MMDetection's generator, and the ``rcnn-zoo convert`` command on a legacy-format file."""

import argparse
import collections
import json
import os

import numpy as np
import pytest

from rcnn_zoo import FasterRCNN
from rcnn_zoo.convert import ConversionError, convert_state_dict
from rcnn_zoo.convert import mmdet_r50_fpn as mm
from rcnn_zoo.convert.cli import add_convert_parser, run_convert
from rcnn_zoo.models.from_checkpoint import convert_checkpoint
from rcnn_zoo.models.registry import build_pretrained
from torch_checkpoint_writer import write_legacy_checkpoint

NUM_CLASSES = 20


def _random_state_dict(num_classes=NUM_CLASSES, seed=0):
    rng = np.random.default_rng(seed)
    state = collections.OrderedDict()
    for key, shape in mm.state_dict_shapes(num_classes).items():
        if key.endswith("running_var"):
            state[key] = rng.uniform(0.05, 2.0, shape).astype(np.float32)
        else:
            state[key] = (0.05 * rng.standard_normal(shape)).astype(np.float32)
        if key.endswith("running_var"):
            state[key[: -len("running_var")] + "num_batches_tracked"] = np.array(0, np.int64)
    return state


@pytest.fixture(scope="module")
def converted():
    state = _random_state_dict()
    model = FasterRCNN(**mm.model_arguments(NUM_CLASSES))
    convert_state_dict("mmdet", state, model=model)
    return state, model


def test_background_last_becomes_background_first(converted):
    state, model = converted
    fc_cls = state["roi_head.bbox_head.fc_cls.weight"]  # [21, 1024], row 20 = background
    fc_reg = state["roi_head.bbox_head.fc_reg.weight"]  # [80, 1024], no background rows
    cls_kernel = model.roi_heads.box_predictor.cls_score.kernel.numpy()  # [1024, 21]
    np.testing.assert_array_equal(cls_kernel[:, 0], fc_cls[NUM_CLASSES])
    np.testing.assert_array_equal(cls_kernel[:, 1:], fc_cls[:NUM_CLASSES].T)
    np.testing.assert_array_equal(
        model.roi_heads.box_predictor.cls_score.bias.numpy()[[0, 1, 20]],
        state["roi_head.bbox_head.fc_cls.bias"][[20, 0, 19]],
    )
    reg_kernel = model.roi_heads.box_predictor.bbox_pred.kernel.numpy()  # [1024, 84]
    np.testing.assert_array_equal(reg_kernel[:, :4], 0.0)
    np.testing.assert_array_equal(reg_kernel[:, 4:], fc_reg.T)
    hidden = np.random.default_rng(1).standard_normal((3, 1024)).astype(np.float32)
    logits, deltas = model.roi_heads.box_predictor(hidden)
    theirs_logits = hidden @ fc_cls.T + state["roi_head.bbox_head.fc_cls.bias"]
    theirs_deltas = hidden @ fc_reg.T + state["roi_head.bbox_head.fc_reg.bias"]
    # Same class probabilities, background moved; class c's deltas at our index c + 1.
    np.testing.assert_allclose(logits.numpy()[:, 1:], theirs_logits[:, :NUM_CLASSES], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits.numpy()[:, 0], theirs_logits[:, NUM_CLASSES], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(deltas.numpy()[:, 1:], theirs_deltas.reshape(3, NUM_CLASSES, 4), rtol=1e-4, atol=1e-4)


def test_neck_rpn_and_shared_fcs(converted):
    state, model = converted
    np.testing.assert_array_equal(
        model.backbone.get_layer("fpn_inner2").kernel.numpy()[0, 0],
        state["neck.lateral_convs.0.conv.weight"][:, :, 0, 0].T,
    )
    np.testing.assert_array_equal(
        model.backbone.get_layer("fpn_layer4").kernel.numpy(),
        state["neck.fpn_convs.2.conv.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        model.rpn.head.objectness.kernel.numpy()[0, 0], state["rpn_head.rpn_cls.weight"][:, :, 0, 0].T
    )
    np.testing.assert_array_equal(
        model.rpn.head.deltas.bias.numpy(), state["rpn_head.rpn_reg.bias"]
    )
    fc6 = model.roi_heads.box_head.fc6.kernel.numpy()
    weight = state["roi_head.bbox_head.shared_fcs.0.weight"]
    # our row (y·7 + x)·256 + c  ←  their column c·49 + y·7 + x
    y, x, c, o = 3, 5, 17, 9
    assert fc6[(y * 7 + x) * 256 + c, o] == weight[o, c * 49 + y * 7 + x]
    bn = model.backbone.get_layer("conv5_block3_2_bn")
    prefix = "backbone.layer4.2.bn2."
    inputs = np.random.default_rng(2).standard_normal((1, 2, 2, 512)).astype(np.float32)
    reference = (inputs - state[prefix + "running_mean"]) / np.sqrt(
        state[prefix + "running_var"].astype(np.float64) + 1e-5
    ) * state[prefix + "weight"] + state[prefix + "bias"]
    np.testing.assert_allclose(bn(inputs, training=False).numpy(), reference, rtol=1e-5, atol=1e-5)


def _mmdet_anchors(stride, height, width, scale=8, ratios=(0.5, 1.0, 2.0)):
    """MMDetection 2.x AnchorGenerator (center_offset 0, scale_major) for one level, in NumPy."""
    ratios = np.asarray(ratios)
    h_ratios = np.sqrt(ratios)
    w_ratios = 1 / h_ratios
    ws = stride * w_ratios * scale
    hs = stride * h_ratios * scale
    base = np.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], axis=-1)
    shift_x = np.arange(width) * stride
    shift_y = np.arange(height) * stride
    xx = np.tile(shift_x, height)
    yy = np.repeat(shift_y, width)
    shifts = np.stack([xx, yy, xx, yy], axis=-1)
    return (base[None] + shifts[:, None]).reshape(-1, 4)


def test_anchors_match_mmdetection(converted):
    _, model = converted
    sizes = [(5, 7), (3, 4), (2, 2), (1, 1), (1, 1)]
    ours = model.rpn.anchor_generator.anchors_for_shapes(sizes)
    for level, (stride, (h, w)) in enumerate(zip((4, 8, 16, 32, 64), sizes)):
        np.testing.assert_allclose(ours[level].numpy(), _mmdet_anchors(stride, h, w), rtol=1e-6, atol=1e-4)


def test_refuses_softmax_rpn_and_class_agnostic_regression():
    state = _random_state_dict(num_classes=2, seed=3)
    softmax = dict(state)
    softmax["rpn_head.rpn_cls.weight"] = np.zeros((6, 256, 1, 1), np.float32)
    with pytest.raises(ConversionError, match="sigmoid"):
        mm.layer_weights(softmax)
    agnostic = dict(state)
    agnostic["roi_head.bbox_head.fc_reg.weight"] = np.zeros((4, 1024), np.float32)
    agnostic["roi_head.bbox_head.fc_reg.bias"] = np.zeros((4,), np.float32)
    with pytest.raises(ConversionError, match="class-agnostic"):
        mm.layer_weights(agnostic)


def test_convert_command_on_a_legacy_checkpoint(converted, tmp_path, capsys):
    state, model = converted
    source = tmp_path / "faster_rcnn_r50_fpn_1x_voc0712.pth"
    write_legacy_checkpoint(source, {"meta": {"epoch": 4, "CLASSES": ("a", "b")}, "state_dict": state})
    output = tmp_path / "voc.weights.h5"
    parser = argparse.ArgumentParser(prog="rcnn-zoo")
    add_convert_parser(parser.add_subparsers(dest="command"), convert_checkpoint)
    args = parser.parse_args(["convert", "--from", "mmdet", "--input", str(source), "--output", str(output)])
    assert args.func is run_convert
    assert run_convert(args) == 0
    printed = capsys.readouterr().out
    assert "voc.weights.h5" in printed and '"anchor_style": "detectron2"' in printed
    before = {v.path: v.numpy() for v in model.weights}
    for variable in model.weights:
        variable.assign(np.zeros(variable.shape, variable.dtype))
    model.load_weights(str(output))
    for variable in model.weights:
        np.testing.assert_array_equal(variable.numpy(), before[variable.path], err_msg=variable.path)

    bad = tmp_path / "not_a_checkpoint.pth"
    bad.write_text("<html>404</html>")
    args = parser.parse_args(["convert", "--from", "mmdet", "--input", str(bad), "--output", str(output)])
    assert run_convert(args) == 2  # a user error, exit code 2 as in the rest of rcnn-zoo
    assert "not a PyTorch checkpoint" in capsys.readouterr().err


def test_convert_command_added_without_a_detector_builder_says_what_to_pass(tmp_path):
    parser = argparse.ArgumentParser(prog="rcnn-zoo")
    add_convert_parser(parser.add_subparsers(dest="command"))  # the converters build no detector
    args = parser.parse_args(["convert", "--from", "mmdet", "--input", str(tmp_path / "x.pth"),
                              "--output", str(tmp_path / "x.weights.h5")])
    with pytest.raises(TypeError, match=r"add_convert_parser\(subparsers, rcnn_zoo.models.from_checkpoint"):
        run_convert(args)


def test_voc_entry_downloads_and_converts_a_pth(converted, tmp_path, monkeypatch):
    """The registry's 'voc' entry end to end, with its URL pointing at a synthetic checkpoint."""
    from rcnn_zoo import weights

    state, reference = converted
    source = tmp_path / "server" / "faster_rcnn_r50_fpn_1x_voc0712-00000000.pth"
    source.parent.mkdir()
    write_legacy_checkpoint(source, {"meta": {"epoch": 4}, "state_dict": state})
    entry = {k: v for k, v in weights.get_weights_entry("voc").items() if not k.startswith("_")}
    entry.update(url=source.as_uri(), file_name=source.name, sha256_prefix=weights.file_sha256(source)[:8])
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"format": weights.REGISTRY_FORMAT, "weights": {"voc_local": entry}}))
    monkeypatch.setenv(weights.REGISTRY_ENV, str(registry))
    monkeypatch.setenv(weights.CACHE_DIR_ENV, str(tmp_path / "cache"))
    model = build_pretrained("voc_local")
    assert model.class_names == entry["class_names"]
    assert model.hyperparameters()["anchor_style"] == "detectron2" and model.image_min_size == 600
    assert model.hyperparameters()["roi_aligned"] is True  # MMCV's RoIAlign is half-pixel aligned
    for a, b in zip(model.weights, reference.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    assert any(p.endswith(".weights.h5") for p in os.listdir(tmp_path / "cache" / "rcnn_zoo"))


def test_registry_entries_use_the_converters_arguments():
    from rcnn_zoo.convert import torchvision_resnet50_fpn as tv
    from rcnn_zoo.weights import get_weights_entry

    voc = get_weights_entry("voc")
    assert voc["convert"] == mm.NAME
    assert json.loads(json.dumps(mm.model_arguments(20))) == voc["model"]
    coco = get_weights_entry("coco")
    assert coco["convert"] == tv.NAME
    assert json.loads(json.dumps(tv.model_arguments(90))) == coco["model"]
    assert coco["convert_options"] == {"bn_epsilon": tv.COCO_V1_BN_EPSILON}
