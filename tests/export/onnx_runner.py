"""Run exported ONNX models the way a deployment does: onnxruntime only, TensorFlow unimportable.

Usage: ``python onnx_runner.py jobs.json`` where ``jobs.json`` is ``{"jobs": [{"name", "model"
(.onnx path), "inputs": {input name: .npy path}}]}``. Prints one JSON object: per job the
outputs (by name), the session's input and output specs (name → type and shape, dynamic dims
by name) and the model's custom metadata; whether TensorFlow could be imported (it is blocked
before onnxruntime is imported, and must stay so), and any rcnn_zoo module or op library that
ended up in this process (the script asserts there is none).
"""

import json
import os
import sys

sys.modules["tensorflow"] = None  # any `import tensorflow` below now raises ImportError

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402


def _tensorflow_importable():
    try:
        import tensorflow  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def _specs(values):
    return {v.name: {"type": v.type, "shape": list(v.shape)} for v in values}


def run_job(job):
    session = onnxruntime.InferenceSession(job["model"], providers=["CPUExecutionProvider"])
    feed = {name: np.load(path) for name, path in job["inputs"].items()}
    names = [output.name for output in session.get_outputs()]
    outputs = dict(zip(names, session.run(names, feed)))
    return {
        "outputs": {name: value.tolist() for name, value in outputs.items()},
        "output_dtypes": {name: str(value.dtype) for name, value in outputs.items()},
        "inputs": _specs(session.get_inputs()),
        "output_specs": _specs(session.get_outputs()),
        "metadata": dict(session.get_modelmeta().custom_metadata_map),
    }


def run(jobs):
    results = {job["name"]: run_job(job) for job in jobs}
    library_loaded = False
    if os.path.exists("/proc/self/maps"):  # Linux: every shared library mapped in this process
        with open("/proc/self/maps", encoding="utf-8") as handle:
            maps = handle.read()
        library_loaded = "_rcnn_zoo_ops" in maps or "libtensorflow" in maps
    imported = sorted(name for name in sys.modules if name.split(".")[0] == "rcnn_zoo")
    assert not imported, f"the ONNX process imported {imported}"
    assert not library_loaded, "the ONNX process loaded rcnn_zoo's op library or TensorFlow"
    importable = _tensorflow_importable()
    assert not importable, "TensorFlow was importable in the ONNX process"
    return {"jobs": results, "tensorflow_importable": importable, "rcnn_zoo_modules": imported,
            "libraries_loaded": library_loaded}


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as handle:
        print(json.dumps(run(json.load(handle)["jobs"])))
