"""Write the compatibility fixtures: one small detector of each kind saved by rcnn_zoo before the
heads/models redesign (commit df222d1), as ``.keras`` and ``.weights.h5``, plus their outputs.

Run once, on that version, from the repository root::

    python tests/compat/make_legacy_fixtures.py

The files are kept in ``tests/compat/legacy/``; ``test_legacy_files.py`` loads them with the
current code and compares the outputs with the ones recorded here. Never re-run this script on a
later version: the point of the fixtures is that they come from before the change.
"""

import json
import os
import subprocess

import numpy as np

import rcnn_zoo

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "legacy")
SEED = 7


def images():
    """Two 96×128 RGB images of random pixels, the same for every detector."""
    return np.random.default_rng(SEED).integers(0, 256, (2, 96, 128, 3)).astype("float32")


def proposals():
    """Ten proposals per image (xyxy pixels), for the detectors that take them."""
    rng = np.random.default_rng(SEED + 1)
    xy = rng.uniform(0, 60, (2, 10, 2))
    wh = rng.uniform(12, 60, (2, 10, 2))
    return np.concatenate([xy, xy + wh], axis=-1).astype("float32")


def build(kind, seed=SEED):
    """A tiny detector of ``kind`` with every choice that reaches the saved config set."""
    import keras

    keras.utils.set_random_seed(seed)
    common = dict(backbone="tiny", class_names=["a", "b"], score_threshold=0.0)
    if kind == "faster_rcnn":
        return rcnn_zoo.FasterRCNN(2, **common, rpn_post_nms_top_n_test=50, roi_head_dim=32)
    if kind == "rfcn":
        return rcnn_zoo.RFCN(2, **common, k=3, reduced_channels=32)
    if kind == "fast_rcnn":
        return rcnn_zoo.FastRCNN(2, **common, roi_head_dim=32)
    if kind == "rcnn":
        return rcnn_zoo.RCNN(2, backbone="tiny", class_names=["a", "b"], classifier="softmax",
                             score_threshold=0.0, max_proposals=10, fc_dim=32)
    raise ValueError(kind)


def inputs(kind):
    if kind in ("fast_rcnn", "rcnn"):
        return {"images": images(), "proposals": proposals()}
    return images()


def main():
    os.makedirs(OUT, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    for kind in ("faster_rcnn", "rfcn", "fast_rcnn", "rcnn"):
        model = build(kind)
        outputs = model.predict(inputs(kind), verbose=0)
        model.save(os.path.join(OUT, f"{kind}.keras"))
        model.save_weights(os.path.join(OUT, f"{kind}.weights.h5"))
        np.savez(os.path.join(OUT, f"{kind}_outputs.npz"), **{k: np.asarray(v) for k, v in outputs.items()})
        print(kind, "detections per image", np.asarray(outputs["num_detections"]))
    with open(os.path.join(OUT, "made_by.json"), "w") as f:
        json.dump({"commit": commit, "keras": __import__("keras").__version__,
                   "tensorflow": __import__("tensorflow").__version__}, f, indent=2)


if __name__ == "__main__":
    main()
