"""Synthetic shapes: tight boxes around the drawn pixels, labels, padding, determinism."""

import numpy as np
import pytest
import tensorflow as tf

from rcnn_zoo.data.synthetic import CLASS_NAMES, generate_shapes, shapes_dataset

NUM_IMAGES = 40


@pytest.fixture(scope="module")
def shapes():
    return generate_shapes(NUM_IMAGES, image_size=(96, 112), max_shapes=4, min_size=12,
                           max_size=48, seed=3)


def _colours_on(line):
    return {tuple(c) for c in line.reshape(-1, 3)}


def _shape_colour(image, box):
    """The colour present on all four border lines of the box and on none just outside it."""
    x1, y1, x2, y2 = (int(v) for v in box)
    assert (x1, y1, x2, y2) == tuple(box)  # integer pixel edges
    h, w = image.shape[:2]
    inside = (_colours_on(image[y1, x1:x2]) & _colours_on(image[y2 - 1, x1:x2])
              & _colours_on(image[y1:y2, x1]) & _colours_on(image[y1:y2, x2 - 1]))
    outside = set()
    if y1 > 0:
        outside |= _colours_on(image[y1 - 1, x1:x2])
    if y2 < h:
        outside |= _colours_on(image[y2, x1:x2])
    if x1 > 0:
        outside |= _colours_on(image[y1:y2, x1 - 1])
    if x2 < w:
        outside |= _colours_on(image[y1:y2, x2])
    candidates = inside - outside
    assert len(candidates) == 1, f"box {box} is not tight around one colour: {candidates}"
    return np.array(candidates.pop())


def test_shapes_dtypes_labels_and_padding(shapes):
    images, boxes, labels = shapes
    assert images.shape == (NUM_IMAGES, 96, 112, 3) and images.dtype == np.uint8
    assert boxes.shape == (NUM_IMAGES, 4, 4) and boxes.dtype == np.float32
    assert labels.shape == (NUM_IMAGES, 4) and labels.dtype == np.int32
    assert CLASS_NAMES == ("circle", "square", "triangle")
    real = labels >= 0
    assert set(np.unique(labels[real])) == {0, 1, 2}
    assert np.all(labels[~real] == -1) and np.all(boxes[~real] == 0)
    counts = real.sum(axis=1)
    assert counts.min() >= 1 and counts.max() <= 4
    # Padding slots come after the real ones.
    assert np.all(real == (np.arange(4)[None] < counts[:, None]))
    b = boxes[real]
    assert np.all(b[:, 0] >= 0) and np.all(b[:, 1] >= 0)
    assert np.all(b[:, 2] <= 112) and np.all(b[:, 3] <= 96)
    sides = np.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)
    assert sides.min() >= 5 and sides.max() <= 48


def test_boxes_are_tight_and_labels_match_the_drawn_shape(shapes):
    images, boxes, labels = shapes
    for image, image_boxes, image_labels in zip(images, boxes, labels):
        for box, label in zip(image_boxes, image_labels):
            if label < 0:
                continue
            colour = _shape_colour(image, box)
            x1, y1, x2, y2 = (int(v) for v in box)
            filled = np.all(image[y1:y2, x1:x2] == colour, axis=-1)
            fill = filled.mean()
            name = CLASS_NAMES[label]
            if name == "square":
                assert fill == 1.0 and x2 - x1 == y2 - y1
            elif name == "circle":
                assert abs((x2 - x1) - (y2 - y1)) <= 1
                assert 0.72 < fill < 0.85 and not filled[0, 0] and filled[filled.shape[0] // 2,
                                                                            filled.shape[1] // 2]
            else:  # a triangle fills half of its bounding box at most (more once pixelated)
                assert 0.35 < fill < 0.66


def test_deterministic_by_seed():
    first = generate_shapes(5, seed=11)
    again = generate_shapes(5, seed=11)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    prefix = generate_shapes(2, seed=11)  # image i depends on (seed, i) only
    for a, b in zip(first, prefix):
        np.testing.assert_array_equal(a[:2], b)
    other = generate_shapes(5, seed=12)
    assert not np.array_equal(first[0], other[0])


def test_dataset_batches_for_fit():
    dataset = shapes_dataset(10, batch_size=4, max_shapes=3, seed=5, shuffle=False)
    images, targets = dataset.element_spec
    assert images.shape.as_list() == [4, 128, 128, 3] and images.dtype == tf.float32
    assert targets["boxes"].shape.as_list() == [4, 3, 4]
    assert targets["labels"].shape.as_list() == [4, 3] and targets["labels"].dtype == tf.int32
    batches = list(dataset)
    assert len(batches) == 2  # 10 // 4, the smaller last batch is dropped
    ref_images, ref_boxes, ref_labels = generate_shapes(10, max_shapes=3, seed=5)
    np.testing.assert_array_equal(batches[1][0].numpy(), ref_images[4:8].astype(np.float32))
    np.testing.assert_array_equal(batches[1][1]["boxes"].numpy(), ref_boxes[4:8])
    np.testing.assert_array_equal(batches[1][1]["labels"].numpy(), ref_labels[4:8])
