"""ONNX export: onnxruntime, in a fresh process where TensorFlow cannot be imported, serves the
detections ``model.predict`` gives (in the OD API's form) for every detector kind, with
dynamic batch and image size from one export; the RoI ops and per-class NMS match the compiled
TF ops; inputs, outputs and metadata; the refusals (encoded images, no tf2onnx, bad format)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import rcnn_zoo
from rcnn_zoo.data.synthetic import CLASS_NAMES, generate_shapes
from rcnn_zoo.export import OUTPUT_NAMES, detections_to_od_api
from rcnn_zoo.heads.postprocess import classwise_nms
from test_export_saved_model import make_detector, subprocess_env

pytest.importorskip("tf2onnx")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from rcnn_zoo.onnx_export import convert_function, export_onnx  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER = os.path.join(HERE, "onnx_runner.py")
LARGE, SMALL = (96, 128), (80, 64)  # (H, W) of two image sizes served by one export
SCORE_ATOL = 1e-5
BOX_ATOL = 1e-4
compiled_ops = pytest.mark.skipif(
    rcnn_zoo.ops.implementation() != "compiled",
    reason="ONNX export of RoIAlign / RoI pooling maps the compiled ops (not loaded)",
)


def _spread(layer, std, rng):
    """Random heads give every RoI about the same scores; wider weights spread them."""
    layer.set_weights([rng.normal(0.0, std, w.shape).astype("float32") for w in layer.get_weights()])


def _proposals(batch, count, size, seed):
    """``[batch, count, 4]`` xyxy pixel proposals inside ``size``, the last two rows zero
    (padding)."""
    rng = np.random.default_rng(seed)
    height, width = size
    corner = rng.uniform(0, [width * 0.6, height * 0.6], (batch, count, 2))
    extent = rng.uniform(8, [width * 0.5, height * 0.5], (batch, count, 2))
    boxes = np.concatenate([corner, np.minimum(corner + extent, [width, height])], -1)
    boxes[:, -2:] = 0.0
    return boxes.astype("float32")


def _detectors():
    """name → (model, export options): each detector kind, random but fixed weights."""
    rng = np.random.default_rng(0)
    faster = make_detector(roi_aligned=True)  # xywh boxes, RoIAlign with the half-pixel shift
    keras.utils.set_random_seed(5)
    rfcn = rcnn_zoo.RFCN(num_classes=3, backbone="tiny", k=3, score_threshold=0.0, max_detections=10)
    rfcn(np.zeros((1, *LARGE, 3), np.float32))
    _spread(rfcn.roi_heads.score_maps, 0.3, rng)
    keras.utils.set_random_seed(2)
    fast = rcnn_zoo.FastRCNN(num_classes=3, backbone="tiny", roi_pooling="pool", score_threshold=0.0,
                             max_detections=10)
    fast({"images": np.zeros((1, *LARGE, 3), np.float32), "proposals": np.zeros((1, 1, 4), np.float32)})
    _spread(fast.roi_heads.box_predictor, 0.5, rng)
    keras.utils.set_random_seed(3)
    rcnn = rcnn_zoo.RCNN(num_classes=3, backbone="tiny", warp_size=32, context_padding=4,
                         max_detections=10, region_batch_size=7)
    for layer, std in ((rcnn.svm, 0.1), (rcnn.bbox_regressor, 0.002)):  # zero-initialised
        layer.kernel.assign(rng.normal(0, std, layer.kernel.shape).astype("float32"))
        layer.bias.assign(rng.normal(0, std, layer.bias.shape).astype("float32"))
    keras.utils.set_random_seed(4)
    # The registered pretrained detectors' backbone (ResNet-50 FPN), random weights; small
    # images, resized (the per-image Resize inside a loop). To keep the test fast: fewer
    # proposals and a narrower box head (the same ops, 12M fewer weights to convert).
    fpn = rcnn_zoo.FasterRCNN(num_classes=3, backbone="resnet50_fpn", image_min_size=80,
                              image_max_size=112, score_threshold=0.0, max_detections=10,
                              rpn_pre_nms_top_n_test=600, rpn_post_nms_top_n_test=100,
                              roi_head_dim=128)
    return {
        "faster": (faster, {"input_type": "image_tensor"}),
        "rfcn": (rfcn, {"input_type": "float_image_tensor", "padded": True}),
        "fast": (fast, {"input_type": "image_tensor"}),
        "rcnn": (rcnn, {"input_type": "image_tensor"}),
        "fpn": (fpn, {"input_type": "image_tensor"}),
    }


@pytest.fixture(scope="module")
def images():
    """Two LARGE images and one SMALL one (uint8), of generated shapes."""
    large, _, _ = generate_shapes(2, LARGE, min_size=16, max_size=40, seed=5)
    small, _, _ = generate_shapes(1, SMALL, min_size=16, max_size=40, seed=6)
    return {"large0": large[0], "large1": large[1], "small": small[0]}


@pytest.fixture(scope="module")
def detectors():
    return _detectors()


# job → (detector, images fed as one batch, proposals per image or None)
JOBS = {
    "faster_batch": ("faster", ["large0", "large1"], None),
    "faster_small": ("faster", ["small"], None),
    "rfcn_padded": ("rfcn", ["small", "large1"], None),  # mixed sizes, padded, with image_sizes
    "rfcn_batch": ("rfcn", ["large0", "large1"], None),
    "fast_batch": ("fast", ["large0", "large1"], 14),
    "fast_small": ("fast", ["small"], 9),
    "rcnn_batch": ("rcnn", ["large0", "large1"], 16),
    "rcnn_small": ("rcnn", ["small"], 11),
    "fpn_batch": ("fpn", ["large0", "large1"], None),  # (the other size: every other detector)
}


def _batch(images, names, float_pixels):
    """Images zero-padded at the bottom/right into one batch, and their own sizes."""
    chosen = [images[name] for name in names]
    sizes = np.array([image.shape[:2] for image in chosen], np.int32)
    height, width = sizes.max(axis=0)
    batch = np.stack(
        [np.pad(im, ((0, height - im.shape[0]), (0, width - im.shape[1]), (0, 0))) for im in chosen]
    )
    return batch.astype(np.float32) if float_pixels else batch, sizes


def _job_inputs(job, images, options):
    """``(onnx inputs, predict input, own sizes)`` of one job."""
    _, names, proposals = JOBS[job]
    batch, sizes = _batch(images, names, options["input_type"] == "float_image_tensor")
    feed = {"input_tensor": batch}
    x = batch
    if options.get("padded"):
        feed["image_sizes"] = sizes
        x = {"images": batch, "image_sizes": sizes}
    if proposals is not None:
        feed["proposals"] = _proposals(len(names), proposals, batch.shape[1:3], seed=sorted(JOBS).index(job))
        x = {"images": batch, "proposals": feed["proposals"]}
    return feed, x, sizes


def _op_function():
    """The RoI ops (both RoIAlign alignments, a fixed and the adaptive grid, RoI pooling, PS-RoI
    pooling) and per-class NMS (per-class boxes with a threshold; shared boxes, SVM-like
    negative scores, fewer candidates than D) in one function. (Input names must differ from
    the output keys: ONNX names the tensors by them.)"""
    features = tf.TensorSpec([None, None, None, 18], tf.float32, name="features")
    rois = tf.TensorSpec([None, 5], tf.float32, name="rois")
    boxes = tf.TensorSpec([None, None, 4, 4], tf.float32, name="class_boxes")
    scores = tf.TensorSpec([None, None, 4], tf.float32, name="class_scores")
    shared = tf.TensorSpec([None, None, 1, 4], tf.float32, name="one_box")
    ops = rcnn_zoo.ops

    def run(features, rois, boxes, scores, shared):
        keep = tf.ones(tf.shape(boxes)[:3], tf.bool)
        per_class = classwise_nms(boxes, scores, keep, 0.1, 0.5, 15)
        one_box = classwise_nms(shared, scores[:, :4] - 1.0, tf.ones(tf.shape(shared)[:3], tf.bool),
                                -1.5, 0.3, 20)
        return {
            "align_aligned": ops.roi_align(features, rois, (7, 7), 1 / 4, -1, True),
            "align_grid": ops.roi_align(features, rois, (5, 4), 1 / 8, 2, False),
            "pool": ops.roi_pool(features, rois, (7, 6), 1 / 4),
            "ps": ops.ps_roi_pool(features, rois, 3, 2, 1 / 4),
            **{f"nms_{k}": v for k, v in per_class.items()},
            **{f"shared_{k}": v for k, v in one_box.items()},
        }

    return tf.function(run, input_signature=[features, rois, boxes, scores, shared], autograph=False)


def _op_inputs():
    rng = np.random.default_rng(1)
    count = 40
    corner = rng.uniform(-20, 70, (count, 2))
    extent = np.concatenate([rng.uniform(0, 2, (count // 2, 2)), rng.uniform(1, 80, (count - count // 2, 2))])
    rois = np.concatenate([rng.integers(0, 2, (count, 1)), corner, corner + extent], 1)
    rois[:3, 1:] = [[2.5, 3.5, 2.5, 3.5], [-50, -50, -40, -40], [60, 40, 200, 200]]  # a point, outside, partly
    corner = rng.uniform(0, 60, (2, 30, 4, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(5, 30, corner.shape)], -1)
    scores = rng.uniform(0, 1, (2, 30, 4))
    scores[1, 3:8, 1] = 0.7  # ties
    return {
        "features": rng.normal(size=(2, 13, 17, 18)).astype("float32"),
        "rois": rois.astype("float32"),
        "class_boxes": boxes.astype("float32"),
        "class_scores": scores.astype("float32"),
        "one_box": boxes[:, :4, :1].astype("float32"),
    }


@pytest.fixture(scope="module")
def exported(detectors, images, tmp_path_factory):
    """Every detector exported once (FasterRCNN and RCNN through ``model.export``), its jobs'
    inputs and references (``model.predict`` in OD API form), and the op function."""
    root = tmp_path_factory.mktemp("onnx")
    models = {}
    for name, (model, options) in detectors.items():
        path = str(root / f"{name}.onnx")
        if name in ("faster", "rcnn"):
            if name == "faster":  # an existing file is replaced
                with open(path, "wb") as handle:
                    handle.write(b"not a model")
            assert model.export(path, format="onnx", verbose=False, **options) == path
        else:
            assert export_onnx(model, path, verbose=False, **options) == path
        models[name] = path
    jobs, references = [], {}
    for job, (name, _, _) in JOBS.items():
        model, options = detectors[name]
        feed, x, sizes = _job_inputs(job, images, options)
        predicted = model.predict(x, verbose=0)
        references[job] = {k: v.numpy() for k, v in detections_to_od_api(model, predicted, sizes).items()}
        jobs.append({"name": job, "model": models[name], "inputs": _save_inputs(root, job, feed)})
    op_function, op_inputs = _op_function(), _op_inputs()
    ops_path = str(root / "ops.onnx")
    with open(ops_path, "wb") as handle:
        handle.write(convert_function(op_function).SerializeToString())
    jobs.append({"name": "ops", "model": ops_path, "inputs": _save_inputs(root, "ops", op_inputs)})
    reference = op_function(*op_inputs.values())  # the compiled TF ops
    references["ops"] = {k: v.numpy() for k, v in reference.items()}
    return {"root": root, "models": models, "jobs": jobs, "references": references}


def _save_inputs(root, job, feed):
    paths = {}
    for name, value in feed.items():
        paths[name] = str(root / f"{job}.{name}.npy")
        np.save(paths[name], value)
    return paths


@pytest.fixture(scope="module")
def served(exported):
    """Every job run by ``onnx_runner.py`` in one fresh Python process without TensorFlow."""
    jobs_file = exported["root"] / "jobs.json"
    jobs_file.write_text(json.dumps({"jobs": exported["jobs"]}))
    result = subprocess.run(
        [sys.executable, RUNNER, str(jobs_file)], cwd=str(exported["root"]), env=subprocess_env(),
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_same_detections(got, expected, max_detections):
    """Served OD API rows equal the reference rows image by image: the same count and scores
    (best first) to SCORE_ATOL; rows matched by class, score and box (BOX_ATOL), since nearly
    tied scores may swap places (at the ``max_detections`` cut, a row tied with the last score
    may be another one); padding rows all zero."""
    for image, count in enumerate(expected["num_detections"].astype(int)):
        assert got["num_detections"][image] == count > 0
        boxes = np.array(got["detection_boxes"][image])
        scores = np.array(got["detection_scores"][image])
        classes = np.array(got["detection_classes"][image])
        assert not boxes[count:].any() and not scores[count:].any() and not classes[count:].any()
        assert np.all((boxes >= 0) & (boxes <= 1))
        want_boxes = expected["detection_boxes"][image][:count]
        want_scores = expected["detection_scores"][image][:count]
        want_classes = expected["detection_classes"][image][:count]
        np.testing.assert_allclose(scores[:count], want_scores, atol=SCORE_ATOL)
        unused = set(range(count))
        for row in range(count):
            match = [j for j in sorted(unused)
                     if classes[row] == want_classes[j] and abs(scores[row] - want_scores[j]) <= SCORE_ATOL
                     and np.abs(boxes[row] - want_boxes[j]).max() <= BOX_ATOL]
            at_cut = count == max_detections and scores[row] <= want_scores[-1] + SCORE_ATOL
            assert match or at_cut, f"image {image} row {row} {boxes[row]} has no match in predict"
            if match:
                unused.remove(match[0])


@compiled_ops
@pytest.mark.parametrize("job", sorted(JOBS))
def test_onnxruntime_outputs_match_predict(job, detectors, exported, served):
    """Each detector kind, each batch (two images, or one of the other size; RFCN also a padded
    batch of mixed sizes with image_sizes) equals ``predict`` on it in the OD API form."""
    model, _ = detectors[JOBS[job][0]]
    got = served["jobs"][job]["outputs"]
    expected = exported["references"][job]
    assert len(got["num_detections"]) == len(JOBS[job][1])
    assert_same_detections(got, expected, int(model.max_detections))


@compiled_ops
def test_roi_ops_and_classwise_nms_match_tensorflow(exported, served):
    """ONNX RoiAlign / MaxRoiPool / the PS-RoI table / the NMS lowering against the compiled TF
    ops, RoIs at a point, outside and partly outside the map included."""
    got = served["jobs"]["ops"]["outputs"]
    expected = exported["references"]["ops"]
    for name in ("align_aligned", "align_grid", "pool", "ps"):
        np.testing.assert_allclose(np.array(got[name]), expected[name], atol=1e-5, err_msg=name)
        assert np.abs(expected[name]).max() > 0.5  # non-trivial outputs
    for prefix in ("nms", "shared"):
        np.testing.assert_array_equal(got[f"{prefix}_num_detections"], expected[f"{prefix}_num_detections"])
        np.testing.assert_array_equal(got[f"{prefix}_labels"], expected[f"{prefix}_labels"])
        np.testing.assert_allclose(np.array(got[f"{prefix}_scores"]), expected[f"{prefix}_scores"], atol=1e-6)
        np.testing.assert_allclose(np.array(got[f"{prefix}_boxes"]), expected[f"{prefix}_boxes"], atol=1e-6)
    assert list(expected["nms_num_detections"]) == [15, 15]  # the D cut
    assert (expected["shared_num_detections"] < 20).all()  # fewer candidates than D: padding


@compiled_ops
def test_inputs_outputs_and_metadata(detectors, served):
    """Input names, dtypes and named dynamic dims as the SavedModel's signature; D static; the
    class names in the metadata."""
    inputs = {
        "faster": {"input_tensor": ("tensor(uint8)", ["batch", "height", "width", 3])},
        "rfcn": {"input_tensor": ("tensor(float)", ["batch", "height", "width", 3]),
                 "image_sizes": ("tensor(int32)", ["batch", 2])},
        "fast": {"input_tensor": ("tensor(uint8)", ["batch", "height", "width", 3]),
                 "proposals": ("tensor(float)", ["batch", "proposals", 4])},
    }
    inputs["rcnn"] = inputs["fast"]
    inputs["fpn"] = inputs["faster"]
    for name, (model, _) in detectors.items():
        result = served["jobs"][f"{name}_batch"]
        assert {k: (v["type"], v["shape"]) for k, v in result["inputs"].items()} == inputs[name]
        d = int(model.max_detections)
        assert {k: (v["type"], v["shape"]) for k, v in result["output_specs"].items()} == {
            "detection_boxes": ("tensor(float)", ["batch", d, 4]),
            "detection_scores": ("tensor(float)", ["batch", d]),
            "detection_classes": ("tensor(float)", ["batch", d]),
            "num_detections": ("tensor(float)", ["batch"]),
        }
        assert result["output_dtypes"] == {k: "float32" for k in OUTPUT_NAMES}
        labels = json.loads(result["metadata"]["labels"])
        assert labels == (list(CLASS_NAMES) if name == "faster" else ["class_0", "class_1", "class_2"])
        assert result["metadata"]["detector"] == type(model).__name__


@compiled_ops
def test_one_export_serves_any_batch_and_image_size(served, exported):
    """One file per detector ran B=2 of 96×128 and B=1 of 80×64 (B=2 only for the FPN); the
    runner had no TensorFlow and no rcnn_zoo; the replaced file left no temporary behind."""
    for job, (_, names, _) in JOBS.items():
        outputs = served["jobs"][job]["outputs"]
        assert np.array(outputs["detection_boxes"]).shape[0] == len(names)
    assert served["tensorflow_importable"] is False
    assert served["rcnn_zoo_modules"] == [] and served["libraries_loaded"] is False
    leftovers = [f for f in os.listdir(exported["root"]) if f.startswith(".")]
    assert leftovers == []


def test_missing_tf2onnx_says_how_to_install(detectors, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # `import tf2onnx` raises ImportError
    model, _ = detectors["faster"]
    path = tmp_path / "model.onnx"
    with pytest.raises(ImportError, match="pip install tf2onnx onnx"):
        model.export(str(path), format="onnx", verbose=False)
    assert not path.exists()


def test_refusals(detectors, tmp_path):
    model, _ = detectors["faster"]
    path = str(tmp_path / "model.onnx")
    with pytest.raises(ValueError, match="no image decoder"):
        model.export(path, format="onnx", input_type="encoded_image_string_tensor", verbose=False)
    with pytest.raises(ValueError, match="input_type"):
        export_onnx(model, path, input_type="image_bytes", verbose=False)
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, path, opset=11, verbose=False)
    with pytest.raises(ValueError, match="'tf_saved_model' or 'onnx'"):
        model.export(path, format="tflite", verbose=False)
    assert not os.path.exists(path)
