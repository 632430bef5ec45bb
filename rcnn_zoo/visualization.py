"""Pictures of detections, drawn with ``keras.visualization.draw_bounding_boxes``."""

import numpy as np
from PIL import Image

import keras


def draw_detections(image, detections, class_names=None, bounding_box_format="xyxy",
                    score_threshold=0.5, color=(255, 40, 40)):
    """Draw one image's detections. Returns a uint8 ``[H, W, 3]`` array.

    Args:
        image: ``[H, W, 3]`` RGB pixels 0..255.
        detections: dict ``boxes [D, 4]``, ``scores [D]``, ``labels [D]`` and optionally
            ``num_detections`` (the output of ``model.predict`` for one image).
        class_names: list of names indexed by label, shown next to each box with its score.
        score_threshold: boxes scoring below it are not drawn.
    """
    boxes = np.asarray(detections["boxes"], np.float32)
    scores = np.asarray(detections["scores"], np.float32)
    labels = np.asarray(detections["labels"], np.int64)
    count = int(detections.get("num_detections", len(scores)))
    keep = (np.arange(len(scores)) < count) & (scores >= score_threshold) & (labels >= 0)
    mapping = dict(enumerate(class_names)) if class_names else None
    drawn = keras.visualization.draw_bounding_boxes(
        np.asarray(image, np.uint8)[None].copy(),
        {
            "boxes": boxes[keep][None],
            "labels": labels[keep][None],
            "confidences": scores[keep][None],
        },
        bounding_box_format=bounding_box_format,
        class_mapping=mapping,
        color=color,
        line_thickness=2,
        font_scale=0.4,
    )
    return np.asarray(drawn[0], np.uint8)


def save_png(array, path):
    """Write a uint8 ``[H, W, 3]`` array as PNG."""
    Image.fromarray(np.asarray(array, np.uint8)).save(path)
    return path
