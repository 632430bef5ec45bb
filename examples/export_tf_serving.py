"""Export a detector for TensorFlow Serving and try the requests a server would answer.

    python examples/export_tf_serving.py                    # random tiny model, JPEG request
    python examples/export_tf_serving.py --input-type image_tensor
    python examples/export_tf_serving.py --weights shapes   # the shipped demo weights
    python examples/export_tf_serving.py --weights run/best.weights.h5 --backbone tiny --num-classes 3
    python examples/export_tf_serving.py --weights model.keras --output /srv/models

1. builds the model (random tiny Faster R-CNN by default, nothing trained) or loads one: a
   registered weights name, a weights file, or a ``.keras`` file;
2. exports it to ``<output>/<model name>/1`` — TF Serving wants numbered version directories;
3. prints the ``docker run … tensorflow/serving`` command that serves it;
4. writes the REST ``:predict`` body to ``<output>/request.json`` (``{"instances": [{"b64": …}]}``
   for encoded images, ``{"inputs": {"input_tensor": …}}`` for pixel tensors) and the ``curl``
   line that sends it, then answers it here — no docker needed — by loading the SavedModel with
   plain TensorFlow and feeding it the decoded body, and prints the response JSON;
5. builds the gRPC ``PredictRequest`` when ``tensorflow-serving-api`` is installed, and answers
   it the same way.
"""

import argparse
import base64
import io
import json
import os
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

import rcnn_zoo
from rcnn_zoo.data.synthetic import CLASS_NAMES, generate_shapes
from rcnn_zoo.export import INPUT_NAME, INPUT_TYPES, LABELS_FILENAME, SIGNATURE_NAME, export_saved_model


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", default=None,
                        help="a registered name (e.g. shapes), a .weights.h5 file for a FasterRCNN "
                             "of --backbone/--num-classes, or a .keras file; default: random weights")
    parser.add_argument("--backbone", default="tiny", help="backbone when building a FasterRCNN")
    parser.add_argument("--num-classes", type=int, default=len(CLASS_NAMES))
    parser.add_argument("--input-type", default="encoded_image_string_tensor", choices=INPUT_TYPES)
    parser.add_argument("--output", default=None, help="model base directory (default: a new temp dir)")
    parser.add_argument("--model-name", default="detector")
    parser.add_argument("--image", default=None, help="image file to send (default: generated shapes)")
    return parser.parse_args(argv)


def build_model(args):
    """Random tiny Faster R-CNN (seeded), a ``.keras`` file, a weights file for a FasterRCNN of
    ``--backbone``/``--num-classes``, or a registered name (``rcnn_zoo.weights``)."""
    names = list(CLASS_NAMES) if args.num_classes == len(CLASS_NAMES) else None
    if args.weights is None:
        keras.utils.set_random_seed(0)  # the same random model, and answers, on every run
        return rcnn_zoo.FasterRCNN(
            num_classes=args.num_classes, backbone=args.backbone, class_names=names,
            max_detections=10,  # short responses; the OD API's default is 100
        )
    if args.weights.endswith(".keras"):
        return keras.saving.load_model(args.weights)
    if os.path.exists(args.weights):
        return rcnn_zoo.FasterRCNN(
            num_classes=args.num_classes, backbone=args.backbone, weights=args.weights, class_names=names
        )
    from rcnn_zoo.models.registry import build_pretrained  # noqa: PLC0415

    return build_pretrained(args.weights)


def request_image(args):
    """(encoded JPEG/PNG bytes, uint8 [H, W, 3] pixels) of the image to send."""
    if args.image:
        with open(args.image, "rb") as handle:
            data = handle.read()
        return data, np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    images, _, _ = generate_shapes(1, image_size=(96, 128), seed=0)
    buffer = io.BytesIO()
    Image.fromarray(images[0]).save(buffer, format="JPEG", quality=95)
    data = buffer.getvalue()
    return data, np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def rest_body(input_type, encoded, pixels):
    """The JSON body TF Serving's REST ``:predict`` takes for this signature."""
    if input_type == "encoded_image_string_tensor":
        # Row ("instances") format; binary values travel base64-encoded as {"b64": ...}.
        return {"signature_name": SIGNATURE_NAME,
                "instances": [{"b64": base64.b64encode(encoded).decode("ascii")}]}
    # Columnar ("inputs") format: one [B, H, W, 3] tensor as nested lists.
    return {"signature_name": SIGNATURE_NAME, "inputs": {INPUT_NAME: pixels[None].tolist()}}


def _from_json(value):
    """JSON values → Python values as TF Serving decodes them ({"b64": s} → bytes)."""
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_from_json(item) for item in value]
    return value


def serve_rest(model_dir, body):
    """Answer a REST ``:predict`` body as TF Serving would, with plain TensorFlow."""
    function = tf.saved_model.load(model_dir).signatures[body.get("signature_name", SIGNATURE_NAME)]
    spec = function.structured_input_signature[1][INPUT_NAME]
    if "instances" in body:
        batch = tf.constant(_from_json(body["instances"]), dtype=spec.dtype)
        outputs = {name: value.numpy() for name, value in function(**{INPUT_NAME: batch}).items()}
        count = len(body["instances"])
        return {"predictions": [{name: value[i].tolist() for name, value in outputs.items()}
                                for i in range(count)]}
    inputs = body["inputs"]
    value = inputs[INPUT_NAME] if isinstance(inputs, dict) else inputs
    outputs = function(**{INPUT_NAME: tf.constant(_from_json(value), dtype=spec.dtype)})
    return {"outputs": {name: value.numpy().tolist() for name, value in outputs.items()}}


def grpc_request(model_name, input_type, encoded, pixels):
    """A ``tensorflow_serving.apis.predict_pb2.PredictRequest``, or None without the package."""
    try:
        from tensorflow_serving.apis import predict_pb2  # noqa: PLC0415
    except ImportError:
        return None
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = SIGNATURE_NAME
    if input_type == "encoded_image_string_tensor":
        tensor = tf.make_tensor_proto([encoded], dtype=tf.string)
    elif input_type == "float_image_tensor":
        tensor = tf.make_tensor_proto(pixels[None].astype(np.float32))
    else:
        tensor = tf.make_tensor_proto(pixels[None])
    request.inputs[INPUT_NAME].CopyFrom(tensor)
    return request


def serve_grpc(model_dir, request):
    """Answer a ``PredictRequest`` as TF Serving would: ``{output name: ndarray}``."""
    function = tf.saved_model.load(model_dir).signatures[request.model_spec.signature_name]
    inputs = {name: tf.constant(tf.make_ndarray(proto)) for name, proto in request.inputs.items()}
    return {name: value.numpy() for name, value in function(**inputs).items()}


def _rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    return value


def describe(outputs, labels, height, width):
    """One line per detection: class name, score and the box in the image's pixels."""
    lines = []
    for i in range(int(outputs["num_detections"])):
        ymin, xmin, ymax, xmax = outputs["detection_boxes"][i]
        class_id = int(outputs["detection_classes"][i])
        lines.append(
            f"  {labels[class_id - 1]:<12} {outputs['detection_scores'][i]:.3f}  x {xmin * width:6.1f}…"
            f"{xmax * width:6.1f}  y {ymin * height:6.1f}…{ymax * height:6.1f}"
        )
    return "\n".join(lines) or "  (no detections)"


def main(argv=None):
    args = parse_args(argv)
    base = os.path.abspath(args.output or tempfile.mkdtemp(prefix="rcnn_zoo_serving_"))
    model_base = os.path.join(base, args.model_name)
    model_dir = os.path.join(model_base, "1")

    model = build_model(args)
    export_saved_model(model, model_dir, input_type=args.input_type)
    with open(os.path.join(model_dir, "assets", LABELS_FILENAME), encoding="utf-8") as handle:
        labels = handle.read().splitlines()

    print("\nServe it (REST on 8501, gRPC on 8500):")
    print(
        f"  docker run -p 8501:8501 -p 8500:8500 --mount type=bind,source={model_base},"
        f"target=/models/{args.model_name} -e MODEL_NAME={args.model_name} -t tensorflow/serving"
    )

    encoded, pixels = request_image(args)
    height, width = pixels.shape[:2]
    body = rest_body(args.input_type, encoded, pixels)
    request_file = os.path.join(base, "request.json")
    with open(request_file, "w", encoding="utf-8") as handle:
        json.dump(body, handle)
    print(f"\nREST request body ({request_file}), send it with:")
    print(f"  curl -d @{request_file} http://localhost:8501/v1/models/{args.model_name}:predict")
    shown = json.dumps(body)
    print("  " + (shown[:160] + f"… ({len(shown)} bytes)" if len(shown) > 160 else shown))

    response = serve_rest(model_dir, body)
    print("\nREST response (answered locally by the loaded SavedModel):")
    print(json.dumps(_rounded(response)))
    first = response["predictions"][0] if "predictions" in response else {
        name: value[0] for name, value in response["outputs"].items()}
    print(f"\nDetections in the {height}×{width} (H×W) image (class ids are 1-based; {LABELS_FILENAME}):")
    print(describe(first, labels, height, width))

    request = grpc_request(args.model_name, args.input_type, encoded, pixels)
    if request is None:
        print("\ngRPC: skipped, tensorflow-serving-api is not installed "
              "(pip install tensorflow-serving-api to build the PredictRequest).")
        return 0
    tensor = request.inputs[INPUT_NAME]
    dims = [d.size for d in tensor.tensor_shape.dim]
    print(f"\ngRPC PredictRequest: model_spec {{name: {request.model_spec.name!r}, signature_name: "
          f"{request.model_spec.signature_name!r}}}, inputs[{INPUT_NAME!r}] "
          f"{tf.dtypes.as_dtype(tensor.dtype).name} {dims} ({request.ByteSize()} bytes). Send it with:")
    print("  channel = grpc.insecure_channel('localhost:8500')")
    print("  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)")
    print("  response = stub.Predict(request, 30.0)")
    answer = serve_grpc(model_dir, request)
    print("gRPC response (answered locally):")
    print(json.dumps(_rounded({name: value.tolist() for name, value in answer.items()})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
