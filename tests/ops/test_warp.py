"""R-CNN's region warp against a naive NumPy loop written from its docstring: output pixel
``(i, j)`` is the bilinear value of the image at the source point of its centre (edge pixels
repeated beyond the outermost pixel centres), or the fill pixel outside the image."""

import numpy as np
import pytest
import tensorflow as tf

from rcnn_zoo.ops.warp import context_boxes, pad_for_warp, warp_padded, warp_regions

FILL = np.array([10.0, 20.0, 30.0], np.float32)


def _bilinear(image, x, y):
    """The image at continuous point ``(x, y)``; pixel ``c``'s centre is ``c + ½``."""
    height, width = image.shape[:2]
    u = min(max(x - 0.5, 0.0), width - 1.0)  # index coordinates, clamped: edges repeat
    v = min(max(y - 0.5, 0.0), height - 1.0)
    x0, y0 = int(np.floor(u)), int(np.floor(v))
    x1, y1 = min(x0 + 1, width - 1), min(y0 + 1, height - 1)
    fx, fy = u - x0, v - y0
    top = (1 - fx) * image[y0, x0] + fx * image[y0, x1]
    bottom = (1 - fx) * image[y1, x0] + fx * image[y1, x1]
    return (1 - fy) * top + fy * bottom


def _reference(images, boxes, box_indices, size, padding, fill, image_sizes):
    """``[K, S, S, 3]`` by a loop over regions and output pixels (float64)."""
    factor = size / (size - 2.0 * padding)
    out = np.zeros((len(boxes), size, size, 3))
    for k, (box, b) in enumerate(zip(boxes.astype(np.float64), box_indices)):
        height, width = image_sizes[b]
        image = images[b, :height, :width].astype(np.float64)
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        w, h = factor * (box[2] - box[0]), factor * (box[3] - box[1])
        for i in range(size):
            y = cy - h / 2 + (i + 0.5) * h / size
            for j in range(size):
                x = cx - w / 2 + (j + 0.5) * w / size
                inside = 0 <= x <= width and 0 <= y <= height
                out[k, i, j] = _bilinear(image, x, y) if inside else fill
    return out


@pytest.mark.parametrize("size, padding", [(8, 2), (12, 0), (9, 3.5)])
def test_warp_matches_the_loop_reference(size, padding):
    """Image 1 is smaller than the batch: its edge repeats up to its own size (the last half
    pixel before that edge does not blend with the batch's padding), then the fill starts."""
    rng = np.random.default_rng(size)
    images = rng.uniform(0, 255, (2, 20, 24, 3)).astype(np.float32)
    image_sizes = np.array([[20, 24], [15, 18]], np.int32)  # image 1 is padded bottom/right
    corners = rng.uniform(-6, 20, (12, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(1, 16, (12, 2))], axis=1).astype(np.float32)
    box_indices = np.repeat([0, 1], 6).astype(np.int32)
    got = warp_regions(images, boxes, box_indices, size, padding, FILL, image_sizes).numpy()
    expected = _reference(images, boxes, box_indices, size, padding, FILL, image_sizes)
    np.testing.assert_allclose(got, expected, atol=2e-3)


def test_warp_padded_reuses_one_padded_copy():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (1, 16, 16, 3)).astype(np.float32)
    boxes = np.array([[2, 3, 9, 12], [-3, 0, 20, 7]], np.float32)
    padded = pad_for_warp(images, FILL)
    assert padded.shape == (1, 18, 18, 3)
    np.testing.assert_array_equal(warp_padded(padded, boxes, [0, 0], 8, 2, FILL),
                                  warp_regions(images, boxes, [0, 0], 8, 2, FILL))


def test_context_boxes_keep_the_centre_and_scale_each_side():
    dilated = context_boxes(tf.constant([[10.0, 20.0, 30.0, 60.0]]), 16, 4).numpy()[0]
    np.testing.assert_allclose(dilated, [0.0, 0.0, 40.0, 80.0])  # ×2 about (20, 40)


def test_no_boxes_and_bad_padding():
    images = np.zeros((1, 8, 8, 3), np.float32)
    empty = warp_regions(images, np.zeros((0, 4), np.float32), np.zeros(0, np.int32), 4, 0)
    assert empty.shape == (0, 4, 4, 3)
    with pytest.raises(ValueError, match="context_padding"):
        warp_regions(images, [[0.0, 0.0, 4.0, 4.0]], [0], 8, 4)
