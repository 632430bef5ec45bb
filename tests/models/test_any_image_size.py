"""Every backbone takes any image size, any number of times in one process: predict, evaluate
and fit on a sequence of images of different sizes and orientations, a padded batch of mixed
sizes, and every detector exports with unknown height/width and mixed-size batches (served in a
fresh process that never imports rcnn_zoo, compared with predict).

CI-sized: images are resized to a shorter side of 64 px (at most 96), so even ResNet-101 runs a
step in seconds; the layers are those of the full configurations.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import rcnn_zoo
from rcnn_zoo.export import export_saved_model

SMALL = {"image_min_size": 64, "image_max_size": 96}
# (height, width): landscape, portrait, odd, square, tiny
SIZES = [(48, 64), (70, 41), (33, 57), (64, 64), (20, 30)]
BACKBONES = ["resnet50_fpn", "resnet50_fpn_v2", "mobilenet_v3_large_fpn", "resnet50", "vgg16", "tiny", "tiny_fpn"]
HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER = os.path.join(HERE, os.pardir, "export", "saved_model_runner.py")


def _images(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]


def _targets(image):
    h, w = image.shape[:2]
    return {"boxes": np.array([[w * 0.2, h * 0.2, w * 0.7, h * 0.8]], np.float32), "labels": np.array([1], np.int32)}


def _model(detector, backbone):
    kwargs = dict(SMALL)
    if backbone == "tiny":
        kwargs = {}
    if detector is rcnn_zoo.RFCN:
        return rcnn_zoo.RFCN(num_classes=2, backbone=backbone, **kwargs)
    return detector(num_classes=2, backbone=backbone, **kwargs)


def _padded(images):
    sizes = np.array([image.shape[:2] for image in images], np.int32)
    batch = np.zeros((len(images), *sizes.max(axis=0), 3), np.uint8)
    for i, image in enumerate(images):
        batch[i, : image.shape[0], : image.shape[1]] = image
    return batch, sizes


def _dataset(images):
    import tensorflow as tf  # noqa: PLC0415

    def gen():
        for image in images:
            t = _targets(image)
            yield {"images": image.astype(np.float32), "image_sizes": np.array(image.shape[:2], np.int32)}, t

    spec = (
        {"images": tf.TensorSpec([None, None, 3], tf.float32), "image_sizes": tf.TensorSpec([2], tf.int32)},
        {"boxes": tf.TensorSpec([None, 4], tf.float32), "labels": tf.TensorSpec([None], tf.int32)},
    )
    return tf.data.Dataset.from_generator(gen, output_signature=spec).padded_batch(
        2, padding_values=({"images": 0.0, "image_sizes": 0}, {"boxes": 0.0, "labels": -1})
    )


@pytest.mark.parametrize("backbone", BACKBONES)
def test_predict_evaluate_fit_on_mixed_sizes(backbone):
    model = _model(rcnn_zoo.FasterRCNN, backbone)
    images = _images()
    alone = []
    for image in images:  # one size after another: retraces must work every time
        out = model.predict(image[None], verbose=0)
        count = int(out["num_detections"][0])
        boxes = out["boxes"][0, :count]
        assert np.all(boxes[:, 2] <= image.shape[1] + 1e-3) and np.all(boxes[:, 3] <= image.shape[0] + 1e-3)
        alone.append(model.preprocess(image[None])[1][0].numpy())
    # A padded batch: each image is resized exactly as alone (a portrait beside a landscape is
    # not shrunk), and its boxes stay inside its own pixels.
    batch, sizes = _padded(images)
    _, resized, _ = model.preprocess(batch, sizes)
    np.testing.assert_array_equal(resized.numpy(), np.stack(alone))
    out = model.predict({"images": batch, "image_sizes": sizes}, verbose=0)
    for i, (h, w) in enumerate(sizes):
        count = int(out["num_detections"][i])
        boxes = out["boxes"][i, :count]
        assert np.all(boxes[:, 2] <= w + 1e-3) and np.all(boxes[:, 3] <= h + 1e-3)
    model.compile()
    history = model.fit(_dataset(images), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    logs = model.evaluate(_dataset(images[::-1]), verbose=0, return_dict=True)
    assert np.isfinite(logs["loss"])


def test_rfcn_and_fast_rcnn_take_mixed_sizes():
    images = _images(1)
    batch, sizes = _padded(images)
    rfcn = _model(rcnn_zoo.RFCN, "resnet50")
    for image in images[:3]:
        rfcn.predict(image[None], verbose=0)
    rfcn.predict({"images": batch, "image_sizes": sizes}, verbose=0)
    fast = _model(rcnn_zoo.FastRCNN, "resnet50_fpn")
    proposals = np.array([[[2, 2, 18, 15], [0, 0, 20, 10]]] * len(images), np.float32)
    for image in images[:3]:
        fast.predict({"images": image[None], "proposals": proposals[:1]}, verbose=0)
    out = fast.predict({"images": batch, "image_sizes": sizes, "proposals": proposals}, verbose=0)
    assert out["boxes"].shape[0] == len(images)


# Every detector × backbone with an export, small images; one fresh serving process for all.
EXPORTS = [(rcnn_zoo.FasterRCNN, b) for b in BACKBONES] + [(rcnn_zoo.RFCN, "resnet50")]


def _png(path, image):
    Image.fromarray(image).save(path)
    return str(path)


def _od_rows(out, index, size):
    count = int(out["num_detections"][index])
    x1, y1, x2, y2 = np.moveaxis(out["boxes"][index, :count].astype(np.float64), -1, 0)
    h, w = size
    return np.stack([y1 / h, x1 / w, y2 / h, x2 / w], -1), out["scores"][index, :count]


def _serve_and_compare(tmp_path, images, exports, proposals=None):
    """Export each ``(detector, backbone)``, serve the padded mixed-size batch through
    ``serving_padded`` in one fresh process without rcnn_zoo, compare with ``predict``."""
    files = [_png(tmp_path / f"image{i}.png", image) for i, image in enumerate(images)]
    jobs, expected = [], {}
    for detector, backbone in exports:
        name = f"{detector.__name__}_{backbone}"
        model = _model(detector, backbone)
        model.score_threshold = 0.0
        exported = export_saved_model(model, str(tmp_path / name), verbose=False)
        batch, sizes = _padded(images)
        inputs = {"images": batch, "image_sizes": sizes}
        job = {"name": name, "model": exported, "input_type": "image_tensor",
               "images": files, "signature": "serving_padded"}
        if proposals is not None:
            inputs["proposals"] = proposals
            job["proposals"] = proposals.tolist()
        expected[name] = model.predict(inputs, verbose=0)
        jobs.append(job)
    jobs_file = tmp_path / "jobs.json"
    jobs_file.write_text(json.dumps({"jobs": jobs}))
    env = {k: v for k, v in os.environ.items() if k != "RCNN_ZOO_FORCE_FALLBACK"}
    result = subprocess.run([sys.executable, RUNNER, str(jobs_file)], cwd=str(tmp_path), env=env,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-4000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])["jobs"]
    for name, out in expected.items():
        got = served[name]["outputs"]
        for i, image in enumerate(images):
            boxes, scores = _od_rows(out, i, image.shape[:2])
            n = len(scores)
            assert int(got["num_detections"][i]) == n, name
            np.testing.assert_allclose(np.array(got["detection_scores"][i])[:n], scores, atol=1e-4, err_msg=name)
            # Random weights tie scores; compare the best-scored boxes, which are well separated.
            np.testing.assert_allclose(np.array(got["detection_boxes"][i])[:1], np.clip(boxes[:1], 0, 1),
                                       atol=1e-3, err_msg=name)


def test_every_backbone_exports_and_serves_mixed_sizes(tmp_path):
    _serve_and_compare(tmp_path, _images(2)[:3], EXPORTS)


def test_fast_rcnn_exports_and_serves_mixed_sizes_with_proposals(tmp_path):
    images = _images(3)[:3]
    proposals = np.array([[[2, 2, 18, 15], [0, 0, 20, 10], [5, 1, 30, 19]]] * len(images), np.float32)
    _serve_and_compare(tmp_path, images, [(rcnn_zoo.FastRCNN, "resnet50_fpn")], proposals)
