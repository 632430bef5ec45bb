"""Run exported SavedModels the way a server does: TensorFlow only, rcnn_zoo never imported.

Usage: ``python saved_model_runner.py jobs.json`` where ``jobs.json`` is
``{"jobs": [{"name", "model" (SavedModel dir), "input_type", "images" (file paths),
"signature" (optional, default "serving_default"), "proposals" (optional, [B, R, 4], for
detectors that take them)}]}``. Images are fed as one batch: file bytes
for ``encoded_image_string_tensor``, else decoded with PIL as uint8 or float32 (all the same
size for ``serving_default``; for ``serving_padded`` zero-padded at the bottom/right to the
largest, with ``image_sizes`` giving each one's own size). Prints one JSON object: per job the four outputs,
the signature's input/output specs and the class names read from the model's labels asset; the
op types in each graph that stock TensorFlow does not register; and whether rcnn_zoo or its op
library ended up in this process (the script asserts they did not).
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf
from PIL import Image
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry


def _batch(input_type, paths):
    if input_type == "encoded_image_string_tensor":
        data = []
        for path in paths:
            with open(path, "rb") as handle:
                data.append(handle.read())
        return tf.constant(data)
    decoded = [np.asarray(Image.open(path).convert("RGB")) for path in paths]
    sizes = np.array([image.shape[:2] for image in decoded], np.int32)
    height, width = sizes.max(axis=0)
    images = np.stack(
        [np.pad(im, ((0, height - im.shape[0]), (0, width - im.shape[1]), (0, 0))) for im in decoded]
    )
    dtype = tf.float32 if input_type == "float_image_tensor" else tf.uint8
    return tf.constant(images.astype(dtype.as_numpy_dtype)), tf.constant(sizes)


def _unregistered_ops(model_dir):
    saved_model = saved_model_pb2.SavedModel()
    with open(f"{model_dir}/saved_model.pb", "rb") as handle:
        saved_model.ParseFromString(handle.read())
    graph = saved_model.meta_graphs[0].graph_def
    ops = {node.op for node in graph.node}
    ops |= {node.op for function in graph.library.function for node in function.node_def}
    return sorted(op for op in ops if op_def_registry.get(op) is None)


def _spec(spec):
    return {"dtype": spec.dtype.name, "shape": spec.shape.as_list()}


def run(jobs):
    results = {}
    for job in jobs:
        loaded = tf.saved_model.load(job["model"])
        name = job.get("signature", "serving_default")
        function = loaded.signatures[name]
        batch = _batch(job["input_type"], job["images"])
        inputs = {"input_tensor": batch[0] if isinstance(batch, tuple) else batch}
        if name == "serving_padded":
            inputs["image_sizes"] = batch[1]
        if "proposals" in job:
            inputs["proposals"] = tf.constant(job["proposals"], tf.float32)
        outputs = function(**inputs)
        with open(loaded.labels_file.asset_path.numpy().decode(), encoding="utf-8") as handle:
            labels = handle.read().splitlines()
        results[job["name"]] = {
            "outputs": {name: value.numpy().tolist() for name, value in outputs.items()},
            "output_dtypes": {name: value.dtype.name for name, value in outputs.items()},
            "inputs": {k: _spec(v) for k, v in function.structured_input_signature[1].items()},
            "output_specs": {k: _spec(v) for k, v in function.structured_outputs.items()},
            "labels": labels,
            "unregistered_ops": _unregistered_ops(job["model"]),
        }
    library_loaded = False
    if os.path.exists("/proc/self/maps"):  # Linux: every shared library mapped in this process
        with open("/proc/self/maps", encoding="utf-8") as handle:
            library_loaded = "_rcnn_zoo_ops" in handle.read()
    imported = sorted(name for name in sys.modules if name.split(".")[0] == "rcnn_zoo")
    assert not imported, f"the serving process imported {imported}"
    assert not library_loaded, "the serving process loaded rcnn_zoo's op library"
    return {"jobs": results, "rcnn_zoo_modules": imported, "op_library_loaded": library_loaded}


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as handle:
        print(json.dumps(run(json.load(handle)["jobs"])))
