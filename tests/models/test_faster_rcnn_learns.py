"""Proof that Faster R-CNN learns: train the small configuration from scratch on generated shapes
on the CPU and require mAP@0.5 ≥ 0.9 on freshly generated images (a different seed)."""

import numpy as np

import keras
import rcnn_zoo
from rcnn_zoo.data.synthetic import CLASS_NAMES, generate_shapes, shapes_dataset
from rcnn_zoo.evaluation.voc import voc_ap_per_class

STEPS = 1200
BATCH = 8


def _detections(out, i):
    n = out["num_detections"][i]
    return out["boxes"][i][:n], out["scores"][i][:n], out["labels"][i][:n]


def test_tiny_faster_rcnn_reaches_map_0_9_on_fresh_shapes():
    keras.utils.set_random_seed(0)
    model = rcnn_zoo.FasterRCNN(num_classes=3, backbone="tiny", class_names=list(CLASS_NAMES))
    schedule = keras.optimizers.schedules.CosineDecay(2e-3, STEPS, alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(schedule, global_clipnorm=10.0))
    model.fit(shapes_dataset(STEPS * BATCH, batch_size=BATCH, seed=0), epochs=1, verbose=0)

    images, boxes, labels = generate_shapes(100, seed=12345)
    out = model.predict(images, batch_size=20, verbose=0)
    detections = [_detections(out, i) for i in range(len(images))]
    truths = [(boxes[i][labels[i] >= 0], labels[i][labels[i] >= 0]) for i in range(len(images))]
    ap, mean_ap = voc_ap_per_class(detections, truths, num_classes=3)
    assert mean_ap >= 0.9, f"mAP@0.5 {mean_ap:.3f}, per class {np.round(ap, 3)}"
