"""The one-pass training pipeline: options, orientation batching, the seeded augmentation stream."""

import numpy as np
import tensorflow as tf
import pytest
from PIL import Image

from rcnn_zoo.data import DetectionDataset, DetectionRecord, make_tf_dataset, steps_per_epoch, training_dataset
from rcnn_zoo.data.augment import DEFAULT_JITTER, Augmentation, Crop, Jitter, ZoomOut
from rcnn_zoo.data.pipeline import detection_batches
from rcnn_zoo.data.stages import Batching, RecordTable, orientation_batch_count
from rcnn_zoo.models.preprocessing import resized_sizes

SIZES = [(40, 60), (60, 40), (40, 60), (60, 40), (40, 60), (50, 50)]  # (H, W): 3 landscape, 2 portrait, 1 square


@pytest.fixture
def shapes(tmp_path):
    """Six noise PNGs; image ``i`` holds one box of label ``i``, except the last (no objects)."""
    records = []
    for i, (h, w) in enumerate(SIZES):
        path = str(tmp_path / f"s{i}.png")
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        boxes = np.asarray([] if i == 5 else [[4 + i, 6, 24 + i, 30]], np.float32).reshape(-1, 4)
        labels = np.full(len(boxes), i, np.int32)
        records.append(DetectionRecord(path, f"s{i}", boxes, labels, np.zeros(len(boxes), bool), h, w))
    return DetectionDataset(records, [f"c{i}" for i in range(6)])


def _epoch(batches):
    return [(t["labels"].numpy().tolist(), x["image_sizes"].numpy().tolist(), t["boxes"].numpy()) for x, t in batches]


# The batches that the former two-stage pipeline (make_tf_dataset, unbatched, augmented again,
# re-batched) gave for this seed: the one pass keeps the random stream.
PINNED = [
    [
        ([[3], [1]], [[47, 32], [32, 39]], [[[4.9, 4.1, 21.3, 23.9]], [[4.0, 0.0, 24.0, 22.0]]]),
        ([[-1], [2]], [[32, 32], [32, 48]], [[[0.0, 0.0, 0.0, 0.0]], [[32.8, 12.6, 44.0, 26.3]]]),
        ([[4], [0]], [[32, 35], [32, 48]], [[[17.1, 1.8, 35.0, 23.1]], [[28.8, 4.8, 44.8, 24.0]]]),
    ],
    [
        ([[2], [4]], [[21, 48], [32, 48]], [[[31.3, 0.0, 48.0, 17.0]], [[25.6, 4.8, 41.6, 24.0]]]),
        ([[1], [3]], [[48, 32], [48, 32]], [[[8.3, 9.9, 19.3, 23.2]], [[10.4, 4.8, 26.4, 24.0]]]),
        ([[0], [-1]], [[32, 48], [32, 32]], [[[10.1, 10.1, 21.9, 24.3]], [[0.0, 0.0, 0.0, 0.0]]]),
    ],
]


def test_a_fixed_seed_gives_the_pinned_batches_every_time(shapes):
    # The op seeds combine with TF's global seed, which earlier tests set: pin with none set.
    tf.random.set_seed(None)
    for _ in range(2):  # built twice: the same stream
        data = training_dataset(shapes, 2, 32, 48, flip=0.5, crop=0.5, zoom_out=1.5, seed=11)
        for expected, got in zip(PINNED, (_epoch(data), _epoch(data))):
            assert [(labels, sizes) for labels, sizes, _ in got] == [(labels, sizes) for labels, sizes, _ in expected]
            for (_, _, boxes), (_, _, pinned) in zip(got, expected):
                np.testing.assert_allclose(boxes, pinned, atol=0.051)


def test_batches_follow_the_original_orientation_and_the_cardinality_is_known(shapes):
    data = training_dataset(shapes, 2, 32, 48, flip=0.5, crop=1.0, crop_min_scale=0.3, seed=0)
    assert int(data.cardinality()) == steps_per_epoch(shapes, 2) == orientation_batch_count(SIZES, 2) == 3  # 2 portrait, 4 not
    portrait = {i for i, (h, w) in enumerate(SIZES) if h > w}
    for _ in range(2):
        batches = _epoch(data)
        assert len(batches) == 3
        assert sorted(label for labels, _, _ in batches for row in labels for label in row) == [-1, 0, 1, 2, 3, 4]
        for labels, _, _ in batches:  # never a portrait original next to a landscape one
            assert len({i in portrait for row in labels for i in row if i >= 0}) <= 1


def test_images_come_out_at_the_detector_size(shapes):
    data = training_dataset(shapes, 3, 32, 48, flip=0.5, seed=2)
    for inputs, _ in data:
        sizes = inputs["image_sizes"].numpy()
        # The model resizes each image by this rule: here it finds every image at its size already.
        np.testing.assert_array_equal(resized_sizes(sizes, 32, 48).numpy(), sizes)


def test_images_without_objects_go_through_every_augmentation(shapes):
    empty = DetectionDataset([shapes.records[5]] * 3, shapes.class_names)
    data = training_dataset(empty, 2, 32, 48, flip=1.0, jitter=True, crop=1.0, zoom_out=2.0, seed=4)
    for _, targets in data:
        assert targets["boxes"].shape[1] == 0 and targets["labels"].shape[1] == 0


def test_jitter_options_parse_to_one_frozen_value():
    assert Jitter.parse(True) == Jitter(**DEFAULT_JITTER)
    assert Jitter.parse({"hue": 0.1, "contrast": 0}) == Jitter(hue=0.1)
    assert Jitter.parse(None) is None and Jitter.parse(False) is None and Jitter.parse({"hue": 0}) is None
    with pytest.raises(ValueError, match="gamma"):
        Jitter.parse({"gamma": 0.1})
    assert not Augmentation().random
    assert Augmentation(flip=0.5).mirror_or_colour and not Augmentation(flip=0.5).reframes
    assert Augmentation(crop=Crop(0.5)).reframes and Augmentation(zoom_out=ZoomOut(1.5)).random
    with pytest.raises(Exception):
        Augmentation().flip = 1.0  # frozen


def test_options_that_contradict_each_other_are_refused(shapes):
    table = RecordTable.build(shapes.records)
    with pytest.raises(ValueError, match="metadata"):
        detection_batches(table, Batching(2), Augmentation(crop=Crop(0.5)), with_metadata=True)
    with pytest.raises(ValueError, match="metadata"):
        detection_batches(table, Batching(2), detector_sizes=(32, 48), with_difficult=True)
    with pytest.raises(ValueError, match="cardinality"):
        Batching(2, drop_remainder=True, by_orientation=True)
    with pytest.raises(ValueError, match="no records"):
        make_tf_dataset([], batch_size=1)


def test_make_tf_dataset_is_the_same_pass_without_the_detector_resize(shapes):
    records = shapes.records
    table = RecordTable.build(records, min_size=30)
    direct = detection_batches(table, Batching(3), with_difficult=True, with_metadata=True)
    public = make_tf_dataset(records, batch_size=3, min_size=30, return_metadata=True)
    for (x, t), (y, u) in zip(direct, public):
        np.testing.assert_array_equal(x["images"].numpy(), y["images"].numpy())
        assert t.keys() == u.keys() and all(np.array_equal(t[k].numpy(), u[k].numpy()) for k in t)
