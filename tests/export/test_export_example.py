"""``examples/export_tf_serving.py`` runs end to end: exports into a TF Serving version
directory, prints the docker command, writes the REST body and answers it faithfully."""

import base64
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "export_tf_serving.py")


def run_example(*args):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    result = subprocess.run(
        [sys.executable, EXAMPLE, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def printed_json(stdout, header):
    """The JSON value printed on the line after ``header``."""
    start = stdout.index(header)
    start = stdout.index("\n", start) + 1
    return json.JSONDecoder().raw_decode(stdout[start:])[0]


@pytest.mark.parametrize("input_type, body_key, weights", [
    ("encoded_image_string_tensor", "instances", []),  # random tiny model
    ("image_tensor", "inputs", ["--weights", "shapes"]),  # the shipped demo weights
])
def test_example_exports_and_answers_the_rest_request(tmp_path, input_type, body_key, weights):
    stdout = run_example("--output", str(tmp_path), "--input-type", input_type, *weights)
    model_dir = tmp_path / "detector" / "1"
    assert (model_dir / "saved_model.pb").exists()
    assert (
        f"docker run -p 8501:8501 -p 8500:8500 --mount type=bind,source={tmp_path / 'detector'},"
        "target=/models/detector -e MODEL_NAME=detector -t tensorflow/serving"
    ) in stdout
    assert f"curl -d @{tmp_path / 'request.json'} http://localhost:8501/v1/models/detector:predict" in stdout

    body = json.loads((tmp_path / "request.json").read_text())
    assert body["signature_name"] == "serving_default" and body_key in body
    response = printed_json(stdout, "REST response")
    # The printed response is what the SavedModel answers to that body (rounded for printing).
    function = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    if body_key == "instances":
        batch = tf.constant([base64.b64decode(item["b64"]) for item in body["instances"]])
        (row,) = response["predictions"]
        got = {name: np.array(value)[None] for name, value in row.items()}
    else:
        batch = tf.constant(np.array(body["inputs"]["input_tensor"], np.uint8))
        got = {name: np.array(value) for name, value in response["outputs"].items()}
    expected = function(input_tensor=batch)
    assert set(got) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value.numpy(), atol=1e-4)
    assert int(got["num_detections"][0]) > 0

    if importlib.util.find_spec("tensorflow_serving") is None:
        assert "gRPC: skipped, tensorflow-serving-api is not installed" in stdout
    else:
        assert "gRPC PredictRequest: model_spec {name: 'detector'" in stdout
        assert printed_json(stdout, "gRPC response").keys() == expected.keys()
