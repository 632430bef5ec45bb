"""Shared check for in-process export tests: served OD-API outputs equal ``model.predict``."""

import numpy as np


def assert_served_matches_predict(served, expected, height, width):
    """Every predicted detection (xyxy pixels, 0-based labels) appears among the served ones
    (normalised yxyx, 1-based classes). Rows are matched by class, box and score, not position:
    where scores tie to float precision, compiled and exported stock ops may order them apart."""
    count = expected["num_detections"]
    np.testing.assert_array_equal(served["num_detections"].numpy(), count.astype("float32"))
    for i, n in enumerate(count):
        x1, y1, x2, y2 = expected["boxes"][i][:n].T
        normalised = np.stack([y1 / height, x1 / width, y2 / height, x2 / width], axis=1)
        got_boxes = served["detection_boxes"][i][:n].numpy()
        got_scores = served["detection_scores"][i][:n].numpy()
        got_classes = served["detection_classes"][i][:n].numpy()
        for box, score, label in zip(normalised, expected["scores"][i][:n], expected["labels"][i][:n]):
            same = (
                (got_classes == label + 1)
                & np.all(np.abs(got_boxes - box) < 1e-4, axis=1)
                & (np.abs(got_scores - score) < 1e-5)
            )
            assert same.any(), (i, box, score, label)
