"""Converted torchvision weights reproduce torchvision, per stage and end to end, without PyTorch.

The references in ``references/<model>.npz`` are torchvision 0.28's own outputs (made by
``make_torchvision_reference.py`` in a separate PyTorch environment, see README.md) for a
checkpoint of seeded synthetic weights with the real layout. Here the same checkpoint is made
again from the seed (NumPy only), converted with rcnn_zoo's converter into the registry preset's
model, and run on the same real photos (640×480, a portrait, 301×233, 40×30, 2000×1333): alone
and in one padded batch of mixed sizes. A detection matches when its IoU with torchvision's is
> 0.99, the label is the same, every corner within 0.01 px and the score within 1e-4.
"""

import json
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

import rcnn_zoo
from rcnn_zoo import convert
from rcnn_zoo.weights import get_weights_entry

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import photos  # noqa: E402
import synthetic_checkpoint  # noqa: E402

BOX_TOL = 0.01  # px
SCORE_TOL = 1e-4
MIN_IOU = 0.99
LEVELS = ("P2", "P3", "P4", "P5", "P6")


def _reference(name):
    path = os.path.join(HERE, "references", f"{name}.npz")
    data = np.load(path, allow_pickle=False)
    return {key: data[key] for key in data.files}, json.loads(str(data["meta"]))


@pytest.fixture(scope="module")
def images():
    if not os.path.isdir(photos.DEFAULT_ROOT):
        pytest.fail(f"the raccoon photos are missing: {photos.DEFAULT_ROOT}")
    return photos.parity_images()


def _check_inputs(meta, images):
    for (name, image), expected in zip(images, meta["images"]):
        assert name == expected["name"]
        assert photos.pixel_digest(image) == expected["pixel_digest"], (
            f"{name}: the decoded pixels differ from those torchvision saw (another JPEG decoder?)"
        )


def _converted(preset, layout, detector=rcnn_zoo.FasterRCNN):
    state = synthetic_checkpoint.make_state_dict(synthetic_checkpoint.load_layout(layout))
    entry = get_weights_entry(preset)
    model = detector(**entry["model"])
    convert.convert_state_dict(entry["convert"], state, model=model, bn_epsilon=1e-5)
    return model, synthetic_checkpoint.state_digest(state)


@pytest.fixture(scope="module")
def resnet50_fpn(images):
    reference, meta = _reference("fasterrcnn_resnet50_fpn")
    _check_inputs(meta, images)
    model, digest = _converted("coco", "fasterrcnn_resnet50_fpn")
    assert digest == meta["state_digest"], "the regenerated checkpoint differs from the reference's"
    return model, reference


def _iou(a, b):
    """IoU of xyxy boxes ``a [N,4]`` against ``b [M,4]`` → ``[N, M]``."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def assert_detections_match(ours, expected, what):
    """Every torchvision detection has one of ours (and no extra): same label, IoU > 0.99,
    corners within 0.01 px, score within 1e-4. ``ours``: (boxes, scores, labels 0-based);
    ``expected``: torchvision's (boxes, scores, labels 1-based)."""
    boxes, scores, labels = ours
    t_boxes, t_scores, t_labels = expected
    assert len(scores) == len(t_scores), f"{what}: {len(scores)} detections, torchvision {len(t_scores)}"
    iou = _iou(t_boxes.astype(np.float64), boxes.astype(np.float64))
    unused = set(range(len(scores)))
    for i in range(len(t_scores)):
        candidates = [
            j for j in unused
            if labels[j] + 1 == t_labels[i]
            and iou[i, j] > MIN_IOU
            and np.abs(boxes[j] - t_boxes[i]).max() <= BOX_TOL
            and abs(scores[j] - t_scores[i]) <= SCORE_TOL
        ]
        assert candidates, (
            f"{what}: torchvision detection {i} (label {t_labels[i]}, score {t_scores[i]:.5f}, "
            f"box {t_boxes[i]}) has no match"
        )
        unused.remove(min(candidates, key=lambda j: np.abs(boxes[j] - t_boxes[i]).max()))


def _ours(outputs, index):
    count = int(outputs["num_detections"][index])
    return (np.asarray(outputs["boxes"][index, :count]), np.asarray(outputs["scores"][index, :count]),
            np.asarray(outputs["labels"][index, :count]))


def _theirs(reference, prefix):
    return reference[f"{prefix}/boxes"], reference[f"{prefix}/scores"], reference[f"{prefix}/labels"]


def _stages(model, image):
    """rcnn_zoo's per-stage tensors for one image, through the model's own layers."""
    normalised, resized, scale = model.preprocess(tf.constant(image[None]))
    features = model.backbone(normalised, training=False)
    levels = [features[name] for name in model.rpn_feature_names]
    anchors = model.anchor_generator(levels, image_shape=tf.shape(normalised)[1:3])
    return normalised, resized, features, anchors


@pytest.mark.parametrize("index", range(5))
def test_each_stage_and_the_detections_of_one_image(resnet50_fpn, images, index):
    model, reference = resnet50_fpn
    name, image = images[index]
    prefix = f"single/{index}"
    normalised, resized, features, anchors = _stages(model, image)
    np.testing.assert_array_equal(resized[0].numpy(), reference[f"{prefix}/resized_size"], err_msg=name)
    np.testing.assert_array_equal(normalised.shape[1:3], reference[f"{prefix}/padded_size"], err_msg=name)
    for level, level_anchors in zip(LEVELS, anchors):
        feature = features[level][0].numpy()
        np.testing.assert_array_equal(feature.shape, reference[f"{prefix}/features/{level}/shape"])
        y, x, c = reference[f"{prefix}/features/{level}/index"].T
        expected = reference[f"{prefix}/features/{level}/value"]
        np.testing.assert_allclose(feature[y, x, c], expected, atol=1e-4 * np.abs(expected).max(),
                                   err_msg=f"{name} {level}")
        level_anchors = level_anchors.numpy()
        assert len(level_anchors) == reference[f"{prefix}/anchors/{level}/count"]
        np.testing.assert_allclose(level_anchors[:5], reference[f"{prefix}/anchors/{level}/first5"], atol=1e-3)
        np.testing.assert_allclose(level_anchors[-5:], reference[f"{prefix}/anchors/{level}/last5"], atol=1e-3)
    # The box head on torchvision's own first 64 proposals.
    rois = tf.constant(reference[f"{prefix}/proposals/boxes"][None, :64])
    roi_levels = [features[level] for level in model.roi_feature_names]
    logits, deltas = model._roi_head(roi_levels, rois, False)
    expected = reference[f"{prefix}/box_head/class_logits"]
    np.testing.assert_allclose(logits[0].numpy(), expected, atol=1e-4 * np.abs(expected).max())
    expected = reference[f"{prefix}/box_head/box_regression"]
    np.testing.assert_allclose(tf.reshape(deltas[0], (len(expected), -1)).numpy(), expected,
                               atol=1e-4 * max(np.abs(expected).max(), 1.0))
    # End to end, from the uint8 photo.
    outputs = model.predict(image[None], verbose=0)
    assert_detections_match(_ours(outputs, 0), _theirs(reference, prefix), name)


def test_a_padded_batch_of_mixed_sizes(resnet50_fpn, images):
    """All five photos in one batch (padded, with their sizes) give torchvision's batch output."""
    model, reference = resnet50_fpn
    sizes = np.array([image.shape[:2] for _, image in images], np.int32)
    batch = np.zeros((len(images), *sizes.max(axis=0), 3), np.uint8)
    for i, (_, image) in enumerate(images):
        batch[i, : image.shape[0], : image.shape[1]] = image
    normalised, resized, _ = model.preprocess(tf.constant(batch), tf.constant(sizes))
    np.testing.assert_array_equal(normalised.shape[1:3], reference["batch/padded_size"])
    outputs = model.predict({"images": batch, "image_sizes": sizes}, verbose=0)
    for i, (name, _) in enumerate(images):
        np.testing.assert_array_equal(resized[i].numpy(), reference[f"batch/{i}/resized_size"])
        assert_detections_match(_ours(outputs, i), _theirs(reference, f"batch/{i}"), f"batch {name}")


def test_fast_rcnn_coco_is_torchvisions_second_stage(images):
    """``FastRCNN(weights="coco")``'s model on external proposals = torchvision's roi_heads."""
    reference, meta = _reference("fasterrcnn_resnet50_fpn")
    model, _ = _converted("fast_rcnn_coco", "fasterrcnn_resnet50_fpn", detector=rcnn_zoo.FastRCNN)
    indices = sorted({int(key.split("/")[1]) for key in reference if key.startswith("fast/")})
    assert indices
    for index in indices:
        name, image = images[index]
        proposals = reference[f"fast/{index}/proposals"][None]
        outputs = model.predict({"images": image[None], "proposals": proposals}, verbose=0)
        assert_detections_match(_ours(outputs, 0), _theirs(reference, f"fast/{index}"), f"fast {name}")
