"""SavedModel export: served outputs equal ``model.predict`` in the OD API's format, in a fresh
process that has only TensorFlow; the signature as ``saved_model_cli`` shows it; stock ops only;
dynamic batch and image size; the label assets; the Keras ``model.export`` entry point."""

import io
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import rcnn_zoo
from rcnn_zoo.data.synthetic import CLASS_NAMES, generate_shapes
from rcnn_zoo.export import (
    INPUT_TYPES,
    OUTPUT_NAMES,
    custom_op_types,
    decode_images,
    detections_to_od_api,
    export_saved_model,
)

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER = os.path.join(HERE, "saved_model_runner.py")
IMAGE_SIZE = (96, 128)  # (H, W) of the two large images
SMALL_SIZE = (80, 64)  # another size, also padded into the large one's batch
MAX_DETECTIONS = 20
SCORE_ATOL = 1e-5
BOX_ATOL = 1e-4


def make_detector(**kwargs):
    """Tiny Faster R-CNN, random but fixed weights, boxes in ``xywh`` (so export must convert)
    unless ``kwargs`` say otherwise."""
    keras.utils.set_random_seed(7)
    options = {"bounding_box_format": "xywh", "score_threshold": 0.0, "max_detections": MAX_DETECTIONS}
    options.update(kwargs)
    model = rcnn_zoo.FasterRCNN(num_classes=3, backbone="tiny", class_names=CLASS_NAMES, **options)
    # Random heads give every RoI about the same scores; a wider class layer spreads them.
    rng = np.random.default_rng(0)
    model.roi_heads.box_predictor.set_weights(
        [rng.normal(0.0, 0.5, w.shape).astype("float32") for w in model.roi_heads.box_predictor.get_weights()]
    )
    return model


def subprocess_env():
    env = dict(os.environ)
    env.pop("RCNN_ZOO_FORCE_FALLBACK", None)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


@pytest.fixture(scope="module")
def detector():
    return make_detector()


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """Two 96×128 JPEGs and one 80×64 PNG of generated shapes; returns paths and PIL pixels."""
    directory = tmp_path_factory.mktemp("images")
    large, _, _ = generate_shapes(2, IMAGE_SIZE, min_size=16, max_size=40, seed=5)
    small, _, _ = generate_shapes(1, SMALL_SIZE, min_size=16, max_size=40, seed=6)
    files = {}
    for name, image in (("large0.jpg", large[0]), ("large1.jpg", large[1]), ("small.png", small[0])):
        path = str(directory / name)
        Image.fromarray(image).save(path, quality=90)
        files[name] = path
    pixels = {name: np.asarray(Image.open(path).convert("RGB")) for name, path in files.items()}
    np.testing.assert_array_equal(pixels["small.png"], small[0])  # PNG is lossless
    return files, pixels


@pytest.fixture(scope="module")
def exports(detector, tmp_path_factory):
    root = tmp_path_factory.mktemp("saved_models")
    return {
        input_type: export_saved_model(detector, str(root / input_type), input_type=input_type, verbose=False)
        for input_type in INPUT_TYPES
    }


# name → (input type, image files fed as one batch, signature)
JOBS = {
    "image_tensor": ("image_tensor", ["large0.jpg", "large1.jpg"], "serving_default"),
    "image_tensor_small": ("image_tensor", ["small.png"], "serving_default"),
    "float_image_tensor": ("float_image_tensor", ["large0.jpg", "large1.jpg"], "serving_default"),
    "encoded_image_string_tensor": (
        "encoded_image_string_tensor", ["large0.jpg", "small.png"], "serving_default"
    ),
    # Mixed sizes padded by the client, with each image's size.
    "image_tensor_padded": ("image_tensor", ["large0.jpg", "small.png"], "serving_padded"),
    "float_image_tensor_padded": ("float_image_tensor", ["small.png", "large1.jpg"], "serving_padded"),
}


@pytest.fixture(scope="module")
def served(exports, image_files, tmp_path_factory):
    """Every job run by ``saved_model_runner.py`` in one fresh Python process."""
    files, _ = image_files
    directory = tmp_path_factory.mktemp("serving")
    jobs = [
        {"name": name, "model": exports[input_type], "input_type": input_type,
         "images": [files[f] for f in names], "signature": signature}
        for name, (input_type, names, signature) in JOBS.items()
    ]
    jobs_file = directory / "jobs.json"
    jobs_file.write_text(json.dumps({"jobs": jobs}))
    result = subprocess.run(
        [sys.executable, RUNNER, str(jobs_file)],
        cwd=str(directory),
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def od_reference(detections, index, own_size):
    """One image of ``model.predict`` (xywh pixels) → OD API rows, written out independently:
    ``[ymin, xmin, ymax, xmax]`` / own size, clipped to [0, 1], rows left empty dropped,
    class = label + 1."""
    count = int(detections["num_detections"][index])
    x, y, w, h = np.moveaxis(detections["boxes"][index, :count].astype(np.float64), -1, 0)
    height, width = own_size
    boxes = np.clip(np.stack([y / height, x / width, (y + h) / height, (x + w) / width], -1), 0, 1)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    scores = detections["scores"][index, :count]
    classes = detections["labels"][index, :count] + 1
    return boxes[keep], scores[keep], classes[keep]


def assert_same_detections(outputs, index, expected):
    """Served rows of image ``index`` equal ``expected`` (boxes, scores, classes) up to float
    rounding. Scores are compared in order; rows are matched by class and box, because nearly
    tied scores (random weights) may swap places. At the ``max_detections`` cut a row tied with
    the last score may be a different one."""
    boxes, scores, classes = expected
    count = int(outputs["num_detections"][index])
    assert outputs["num_detections"][index] == count == len(scores) > 0
    got_boxes = np.array(outputs["detection_boxes"][index])
    got_scores = np.array(outputs["detection_scores"][index])
    got_classes = np.array(outputs["detection_classes"][index])
    assert not got_boxes[count:].any() and not got_scores[count:].any()
    assert not got_classes[count:].any()  # padding rows are all zero, class 0
    assert np.all((got_boxes >= 0) & (got_boxes <= 1))
    np.testing.assert_allclose(got_scores[:count], scores, atol=SCORE_ATOL)
    unused = set(range(count))
    for row in range(count):
        match = [
            j for j in sorted(unused)
            if got_classes[row] == classes[j]
            and abs(got_scores[row] - scores[j]) <= SCORE_ATOL
            and np.abs(got_boxes[row] - boxes[j]).max() <= BOX_ATOL
        ]
        at_cut = count == MAX_DETECTIONS and got_scores[row] <= scores[-1] + SCORE_ATOL
        assert match or at_cut, f"served row {row} {got_boxes[row]} has no match in predict"
        if match:
            unused.remove(match[0])


@pytest.mark.parametrize("job", sorted(JOBS))
def test_served_outputs_match_predict(job, detector, image_files, served):
    """Every served batch — same sizes, or mixed sizes (encoded, or padded by the client with
    image_sizes) — equals ``predict`` on that batch with each image's own size."""
    files, pixels = image_files
    input_type, names, _ = JOBS[job]
    if input_type == "encoded_image_string_tensor":
        # What the server sees: TF's own JPEG decoding, then the small image padded with black.
        decoded = [tf.io.decode_image(open(files[n], "rb").read(), channels=3).numpy() for n in names]
    else:
        decoded = [pixels[n] for n in names]
    sizes = np.array([image.shape[:2] for image in decoded], np.int32)
    height, width = np.max(sizes, axis=0)
    batch = np.stack(
        [np.pad(im, ((0, height - im.shape[0]), (0, width - im.shape[1]), (0, 0))) for im in decoded]
    )
    if input_type == "float_image_tensor":
        batch = batch.astype(np.float32)
    detections = detector.predict({"images": batch, "image_sizes": sizes}, verbose=0)
    outputs = served["jobs"][job]["outputs"]
    assert len(outputs["num_detections"]) == len(names)
    for index, size in enumerate(sizes):
        assert_same_detections(outputs, index, od_reference(detections, index, size))


def test_padding_is_not_part_of_the_image(detector, image_files):
    """The small PNG padded into the JPEG's batch: as a plain tensor the padding is image and
    detections land in it (so the tests above are not trivial); with its size every box lies in
    its own pixels. (Its scores move slightly from those it gets alone: the convolutions see the
    batch's padding beyond its border, as in torchvision's padded batches.)"""
    _, pixels = image_files
    small = pixels["small.png"]
    padded = np.zeros((1, *IMAGE_SIZE, 3), np.uint8)
    padded[0, : SMALL_SIZE[0], : SMALL_SIZE[1]] = small
    plain = detector.predict(padded, verbose=0)
    x, y = plain["boxes"][0, :, 0], plain["boxes"][0, :, 1]
    in_padding = (x >= SMALL_SIZE[1]) | (y >= SMALL_SIZE[0])
    assert in_padding[: plain["num_detections"][0]].any()
    sized = detector.predict({"images": padded, "image_sizes": np.array([SMALL_SIZE])}, verbose=0)
    count = int(sized["num_detections"][0])
    x, y, w, h = np.moveaxis(sized["boxes"][0, :count], -1, 0)  # xywh
    assert count > 0
    assert np.all(x + w <= SMALL_SIZE[1] + 1e-3) and np.all(y + h <= SMALL_SIZE[0] + 1e-3)


def test_signature_inputs_outputs_and_dtypes(served):
    expected_inputs = {
        "image_tensor": ("uint8", [None, None, None, 3]),
        "float_image_tensor": ("float32", [None, None, None, 3]),
        "encoded_image_string_tensor": ("string", [None]),
    }
    for job, (input_type, names, signature) in JOBS.items():
        result = served["jobs"][job]
        dtype, shape = expected_inputs[input_type]
        expected = {"input_tensor": {"dtype": dtype, "shape": shape}}
        if signature == "serving_padded":
            expected["image_sizes"] = {"dtype": "int32", "shape": [None, 2]}
        assert result["inputs"] == expected
        assert result["output_specs"] == {
            "detection_boxes": {"dtype": "float32", "shape": [None, MAX_DETECTIONS, 4]},
            "detection_scores": {"dtype": "float32", "shape": [None, MAX_DETECTIONS]},
            "detection_classes": {"dtype": "float32", "shape": [None, MAX_DETECTIONS]},
            "num_detections": {"dtype": "float32", "shape": [None]},
        }
        assert result["output_dtypes"] == {name: "float32" for name in OUTPUT_NAMES}
        batch = len(names)
        assert np.array(result["outputs"]["detection_boxes"]).shape == (batch, MAX_DETECTIONS, 4)


def test_dynamic_batch_and_image_size(served):
    """One SavedModel served a batch of two 96×128 images and a batch of one 80×64 image."""
    assert len(served["jobs"]["image_tensor"]["outputs"]["num_detections"]) == 2
    assert len(served["jobs"]["image_tensor_small"]["outputs"]["num_detections"]) == 1


def test_serving_process_has_only_stock_tensorflow(served, exports):
    assert served["rcnn_zoo_modules"] == []
    assert served["op_library_loaded"] is False
    for job in JOBS:
        assert served["jobs"][job]["unregistered_ops"] == []
    for path in exports.values():
        assert custom_op_types(_graph_def(path)) == []


def _graph_def(path):
    from tensorflow.core.protobuf import saved_model_pb2  # noqa: PLC0415

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as handle:
        saved_model.ParseFromString(handle.read())
    return saved_model.meta_graphs[0].graph_def


@pytest.mark.skipif(
    rcnn_zoo.ops.implementation() != "compiled", reason="the compiled op library is not loaded"
)
def test_non_portable_export_keeps_the_compiled_ops(detector, tmp_path):
    """The op scan can fail: without force_fallback the compiled RoIAlign is in the graph."""
    path = export_saved_model(detector, str(tmp_path / "native"), verbose=False, portable=False)
    assert "RcnnZooRoiAlign" in custom_op_types(_graph_def(path))


def test_class_names_travel_as_assets(served, exports):
    for job in JOBS:
        assert served["jobs"][job]["labels"] == list(CLASS_NAMES)
    with open(os.path.join(exports["image_tensor"], "assets", "label_map.pbtxt")) as handle:
        label_map = handle.read()
    assert "item {\n  id: 1\n  name: 'circle'\n}" in label_map
    assert "id: 3\n  name: 'triangle'" in label_map


def _saved_model_cli():
    binary = shutil.which("saved_model_cli")
    if binary:
        return [binary]
    return [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


def test_saved_model_cli_shows_the_signature(exports):
    command = _saved_model_cli() + [
        "show", "--dir", exports["image_tensor"], "--tag_set", "serve", "--signature_def", "serving_default",
    ]
    result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    text = result.stdout
    inputs, outputs = text.split("The given SavedModel SignatureDef contains the following output(s):")
    assert "inputs['input_tensor'] tensor_info:" in inputs
    assert "dtype: DT_UINT8" in inputs and "shape: (-1, -1, -1, 3)" in inputs
    for name in OUTPUT_NAMES:
        block = outputs.split(f"outputs['{name}'] tensor_info:")[1].split("outputs[")[0]
        assert "dtype: DT_FLOAT" in block
    assert "Method name is: tensorflow/serving/predict" in outputs


def test_keras_export_entry_point(detector, exports, image_files, tmp_path):
    files, _ = image_files
    path = str(tmp_path / "keras_export")
    assert detector.export(path, input_type="encoded_image_string_tensor", verbose=False) == path
    ours = tf.saved_model.load(path).signatures["serving_default"]
    reference = tf.saved_model.load(exports["encoded_image_string_tensor"]).signatures["serving_default"]
    assert ours.structured_input_signature == reference.structured_input_signature
    assert ours.structured_outputs == reference.structured_outputs
    request = tf.constant([open(files["large1.jpg"], "rb").read()])
    got, expected = ours(input_tensor=request), reference(input_tensor=request)
    for name in OUTPUT_NAMES:
        np.testing.assert_array_equal(got[name].numpy(), expected[name].numpy())
    with pytest.raises(ValueError, match="tf_saved_model"):
        detector.export(path, format="tflite")


def test_keras_export_default_is_image_tensor(tmp_path):
    model = make_detector(bounding_box_format="xyxy")
    path = str(tmp_path / "default")
    model.export(path, verbose=False)
    spec = tf.saved_model.load(path).signatures["serving_default"].structured_input_signature[1]
    assert spec["input_tensor"].dtype == tf.uint8


def test_bad_arguments(detector, tmp_path):
    with pytest.raises(ValueError, match="input_type"):
        export_saved_model(detector, str(tmp_path / "x"), input_type="image_bytes")
    with pytest.raises(TypeError, match="detector"):
        export_saved_model(keras.layers.Dense(2), str(tmp_path / "y"))
    assert not os.path.exists(tmp_path / "x")


class _XyxyModel:
    bounding_box_format = "xyxy"


def test_detections_to_od_api_exact():
    """Two images, the second 50×80. Normalised by own size, yxyx, clipped; the second image's
    first detection lies outside it (x ≥ 80), is dropped and the rest move up."""
    outputs = {
        "boxes": tf.constant(
            [[[20.0, 10.0, 120.0, 60.0], [0.0, 0.0, 200.0, 100.0], [0.0, 0.0, 0.0, 0.0]],
             [[100.0, 0.0, 150.0, 40.0], [40.0, 25.0, 100.0, 75.0], [8.0, 5.0, 16.0, 10.0]]]
        ),
        "scores": tf.constant([[0.9, 0.5, 0.0], [0.8, 0.7, 0.6]]),
        "labels": tf.constant([[2, 0, -1], [1, 0, 2]]),
        "num_detections": tf.constant([2, 3]),
    }
    result = detections_to_od_api(_XyxyModel(), outputs, tf.constant([[100, 200], [50, 80]]))
    np.testing.assert_allclose(
        result["detection_boxes"].numpy(),
        [[[0.1, 0.1, 0.6, 0.6], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]],
         [[0.5, 0.5, 1.0, 1.0], [0.1, 0.1, 0.2, 0.2], [0.0, 0.0, 0.0, 0.0]]],
        atol=1e-6,
    )
    np.testing.assert_allclose(result["detection_scores"].numpy(), [[0.9, 0.5, 0.0], [0.7, 0.6, 0.0]])
    np.testing.assert_array_equal(result["detection_classes"].numpy(), [[3, 1, 0], [1, 3, 0]])
    np.testing.assert_array_equal(result["num_detections"].numpy(), [2, 2])
    for value in result.values():
        assert value.dtype == tf.float32


def _encoded(image, format):
    data = io.BytesIO()
    Image.fromarray(image).save(data, format=format)
    return data.getvalue()


def test_decode_images_pads_to_the_largest_and_reports_own_sizes():
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    rgba = rng.integers(0, 256, (6, 4, 4), dtype=np.uint8)
    rgb = rng.integers(0, 256, (3, 9, 3), dtype=np.uint8)
    encoded = [_encoded(grey, "PNG"), _encoded(rgba, "PNG"), _encoded(rgb, "BMP")]
    images, sizes = decode_images(tf.constant(encoded))
    assert images.dtype == tf.uint8 and images.shape == (3, 6, 9, 3)
    np.testing.assert_array_equal(sizes.numpy(), [[5, 7], [6, 4], [3, 9]])
    expected = np.zeros((3, 6, 9, 3), np.uint8)
    expected[0, :5, :7] = grey[..., None]
    expected[1, :6, :4] = rgba[..., :3]
    expected[2, :3, :9] = rgb
    np.testing.assert_array_equal(images.numpy(), expected)
