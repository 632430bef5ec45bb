"""The README demo: a small Faster R-CNN finds shapes in a freshly generated picture.

Uses the ``"shapes"`` weights shipped in ``weights/`` (trained by ``train_shapes_model`` below:
``python -m rcnn_zoo.demo --output weights/shapes_tiny.weights.h5``); if they are missing, trains
them first (about two minutes on 2 CPU cores) and caches them.
"""

import os

import numpy as np

import keras

from rcnn_zoo.data.synthetic import CLASS_NAMES, generate_shapes, shapes_dataset
from rcnn_zoo.evaluation.voc import voc_ap_per_class
from rcnn_zoo.models.registry import build_pretrained, get_detector
from rcnn_zoo.visualization import draw_detections, save_png

SHAPES_DETECTOR = "faster_rcnn"
SHAPES_CONFIG = {"num_classes": 3, "backbone": "tiny", "class_names": list(CLASS_NAMES)}
SHAPES_STEPS = 1200
SHAPES_BATCH = 8


def _new_shapes_model():
    """The demo's detector, untrained: a tiny-backbone Faster R-CNN for the three shapes."""
    return get_detector(SHAPES_DETECTOR)(**SHAPES_CONFIG)


def train_shapes_model(steps=SHAPES_STEPS, batch_size=SHAPES_BATCH, seed=0, verbose=1):
    """Train the demo model from scratch on generated shapes (128×128 px, 1–3 shapes each).

    Adam with a cosine-decayed learning rate from 2e-3; every step sees new images.
    """
    keras.utils.set_random_seed(seed)
    model = _new_shapes_model()
    schedule = keras.optimizers.schedules.CosineDecay(2e-3, steps, alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(schedule, global_clipnorm=10.0))
    model.fit(shapes_dataset(steps * batch_size, batch_size=batch_size, seed=seed), epochs=1,
              verbose=verbose)
    return model


def load_shapes_model(verbose=1):
    """The demo model: the registered ``"shapes"`` weights (shipped in ``weights/``), or, when
    they cannot be found, weights trained now and cached in ``~/.keras/rcnn_zoo``."""
    try:
        return build_pretrained("shapes")
    except (FileNotFoundError, OSError, ValueError) as error:
        cache = os.path.join(os.path.expanduser("~"), ".keras", "rcnn_zoo", "shapes_trained.weights.h5")
        if os.path.exists(cache):
            model = _new_shapes_model()
            model.load_weights(cache)
            return model
        print(f"The 'shapes' weights are not available ({error}); training them now (about 2 minutes).")
        model = train_shapes_model(verbose=verbose)
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        model.save_weights(cache)
        return model


def run_demo(output="demo_detections.png", seed=2024, num_images=4, image_size=(192, 256)):
    """Detect shapes on ``num_images`` new pictures and write them side by side to ``output``.

    Returns the predictions dict.
    """
    model = load_shapes_model()
    images, _, _ = generate_shapes(num_images, image_size=image_size, min_shapes=2, max_shapes=4,
                                   seed=seed)
    predictions = model.predict(images, verbose=0)
    panels = [
        draw_detections(images[i], {k: v[i] for k, v in predictions.items()},
                        class_names=list(CLASS_NAMES), score_threshold=0.5)
        for i in range(num_images)
    ]
    save_png(np.concatenate(panels, axis=1), output)
    for i in range(num_images):
        n = int(predictions["num_detections"][i])
        found = [
            f"{CLASS_NAMES[label]} {score:.2f}"
            for label, score in zip(predictions["labels"][i][:n], predictions["scores"][i][:n])
            if score >= 0.5
        ]
        print(f"image {i}: " + (", ".join(found) if found else "nothing above 0.5"))
    print(f"wrote {output}")
    return predictions


def evaluate_shapes_model(model, num_images=200, seed=12345):
    """VOC mAP@0.5 (all-points) of ``model`` on freshly generated 128×128 shape images."""
    images, boxes, labels = generate_shapes(num_images, seed=seed)
    out = model.predict(images, batch_size=20, verbose=0)
    detections = [
        tuple(out[k][i][: out["num_detections"][i]] for k in ("boxes", "scores", "labels"))
        for i in range(num_images)
    ]
    truths = [(boxes[i][labels[i] >= 0], labels[i][labels[i] >= 0]) for i in range(num_images)]
    return voc_ap_per_class(detections, truths, num_classes=3)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Train and save the demo 'shapes' weights.")
    parser.add_argument("--output", default="weights/shapes_tiny.weights.h5")
    parser.add_argument("--steps", type=int, default=SHAPES_STEPS)
    args = parser.parse_args()
    trained = train_shapes_model(steps=args.steps, verbose=2)
    trained.save_weights(args.output)
    ap, mean_ap = evaluate_shapes_model(trained)
    print(f"saved {args.output}; mAP@0.5 on 200 fresh images: {mean_ap:.4f} (per class {ap})")
