"""Selective search proposals, their on-disk cache, and the batching / tf.data helpers."""

import os
import sys
import types

import numpy as np
import pytest

from rcnn_zoo import proposals
from rcnn_zoo.data.synthetic import generate_shapes

H, W = 96, 128


@pytest.fixture(scope="module")
def image():
    images, _, _ = generate_shapes(1, image_size=(H, W), min_shapes=2, max_shapes=3, seed=3)
    return images[0]


def _check_boxes(boxes, height, width, min_size):
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert len(boxes) > 0
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    assert (boxes[:, 2] - boxes[:, 0] >= min_size).all()
    assert (boxes[:, 3] - boxes[:, 1] >= min_size).all()
    assert len(np.unique(boxes, axis=0)) == len(boxes)


@pytest.mark.parametrize("mode", ["fast", "quality"])
def test_selective_search_boxes_lie_inside_the_image(image, mode):
    boxes = proposals.selective_search(image, mode=mode, max_proposals=None, min_size=4)
    _check_boxes(boxes, H, W, 4)
    # The last grouping step merges everything: the whole image is always a proposal.
    assert [0, 0, W, H] in boxes.tolist()


def test_quality_mode_finds_more_boxes_than_fast(image):
    fast = proposals.selective_search(image, mode="fast", max_proposals=None, min_size=0)
    quality = proposals.selective_search(image, mode="quality", max_proposals=None, min_size=0)
    assert len(quality) > len(fast)


def test_shrunk_image_boxes_are_mapped_back_to_original_pixels():
    """A 192×320 image searched at 100 px: boxes in the original pixels, whole image included."""
    images, _, _ = generate_shapes(1, image_size=(192, 320), seed=5)
    boxes = proposals.selective_search(images[0], max_side=100, max_proposals=None, min_size=8)
    _check_boxes(boxes, 192, 320, 8)
    np.testing.assert_allclose(boxes.max(axis=0)[2:], [320, 192], atol=1e-3)
    # Searched at 100 px, coordinates are multiples of 320/100 and 192/60 original pixels.
    np.testing.assert_allclose(boxes[:, 0] / 3.2, np.round(boxes[:, 0] / 3.2), atol=1e-3)
    np.testing.assert_allclose(boxes[:, 1] / 3.2, np.round(boxes[:, 1] / 3.2), atol=1e-3)


def test_seeded_order_is_reproducible_and_max_proposals_keeps_the_best_ranked(image):
    a = proposals.selective_search(image, max_proposals=None, min_size=0, seed=7)
    b = proposals.selective_search(image, max_proposals=None, min_size=0, seed=7)
    np.testing.assert_array_equal(a, b)
    top = proposals.selective_search(image, max_proposals=10, min_size=0, seed=7)
    np.testing.assert_array_equal(top, a[:10])


def test_min_size_drops_small_boxes(image):
    every = proposals.selective_search(image, max_proposals=None, min_size=0)
    large = proposals.selective_search(image, max_proposals=None, min_size=40)
    sides = np.minimum(every[:, 2] - every[:, 0], every[:, 3] - every[:, 1])
    assert len(large) == int(np.sum(sides >= 40)) < len(every)


def test_gray_and_float_images_are_accepted(image):
    gray = image.mean(axis=-1)
    boxes = proposals.selective_search(gray.astype(np.float32), max_proposals=50)
    _check_boxes(boxes, H, W, 16)


def test_bad_arguments_are_refused(image):
    with pytest.raises(ValueError, match="mode"):
        proposals.selective_search(image, mode="slow")
    with pytest.raises(ValueError, match="RGB"):
        proposals.selective_search(np.zeros((4, 5, 6, 3), np.uint8))


def test_missing_opencv_contrib_is_explained(monkeypatch, image):
    monkeypatch.setitem(sys.modules, "cv2", types.ModuleType("cv2"))  # a cv2 without ximgproc
    with pytest.raises(ImportError, match="opencv-contrib-python"):
        proposals.selective_search(image)


# ---------------------------------------------------------------------------- cache
@pytest.fixture()
def image_files(tmp_path):
    import cv2

    images, _, _ = generate_shapes(3, image_size=(H, W), seed=11)
    paths = []
    for i, pixels in enumerate(images):
        path = str(tmp_path / f"image_{i}.png")
        cv2.imwrite(path, pixels[..., ::-1])
        paths.append(path)
    return paths, images


@pytest.fixture()
def counted(monkeypatch):
    calls = []
    original = proposals.selective_search

    def counting(image, **kwargs):
        calls.append(image.shape)
        return original(image, **kwargs)

    monkeypatch.setattr(proposals, "selective_search", counting)
    return calls


def test_paths_are_read_as_rgb_and_give_the_array_results(image_files):
    paths, images = image_files
    from_paths = proposals.compute_proposals(paths, max_proposals=100)
    from_arrays = proposals.compute_proposals(images, max_proposals=100)
    for a, b in zip(from_paths, from_arrays):
        np.testing.assert_array_equal(a, b)


def test_cache_hit_does_not_recompute(tmp_path, image_files, counted):
    paths, _ = image_files
    cache = str(tmp_path / "cache")
    first = proposals.compute_proposals(paths, cache_dir=cache, max_proposals=100)
    assert len(counted) == 3
    assert len([f for f in os.listdir(cache) if f.endswith(".npz")]) == 3
    second = proposals.compute_proposals(paths, cache_dir=cache, max_proposals=100)
    assert len(counted) == 3  # all three read from the cache
    for a, b in zip(first, second):
        assert b.dtype == np.float32
        np.testing.assert_array_equal(a, b)


def test_cache_key_follows_mtime_and_settings(tmp_path, image_files, counted):
    paths, _ = image_files
    cache = str(tmp_path / "cache")
    proposals.compute_proposals(paths, cache_dir=cache, max_proposals=100)
    assert len(counted) == 3
    stat = os.stat(paths[1])
    os.utime(paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the file changed
    proposals.compute_proposals(paths, cache_dir=cache, max_proposals=100)
    assert len(counted) == 4
    proposals.compute_proposals(paths, cache_dir=cache, max_proposals=50)  # other setting
    assert len(counted) == 7
    proposals.compute_proposals(paths, cache_dir=cache, mode="quality", max_proposals=50)
    assert len(counted) == 10
    proposals.compute_proposals(paths, cache_dir=cache, max_proposals=50)
    assert len(counted) == 10


def test_corrupt_cache_entries_are_recomputed(tmp_path, image_files, counted):
    paths, _ = image_files
    cache = str(tmp_path / "cache")
    first = proposals.compute_proposals(paths[:1], cache_dir=cache, max_proposals=100)
    (entry,) = [os.path.join(cache, f) for f in os.listdir(cache)]
    with open(entry, "wb") as handle:
        handle.write(b"not a zip file")
    again = proposals.compute_proposals(paths[:1], cache_dir=cache, max_proposals=100)
    assert len(counted) == 2
    np.testing.assert_array_equal(first[0], again[0])


def test_arrays_are_cached_by_content(tmp_path, image_files, counted):
    _, images = image_files
    cache = str(tmp_path / "cache")
    proposals.compute_proposals(images, cache_dir=cache, max_proposals=20)
    proposals.compute_proposals(list(images), cache_dir=cache, max_proposals=20)
    assert len(counted) == 3
    changed = images.copy()
    changed[0, 0, 0, 0] ^= 1
    proposals.compute_proposals(changed, cache_dir=cache, max_proposals=20)
    assert len(counted) == 4


# ---------------------------------------------------------------------------- batching
def test_pad_proposals_pads_with_zero_rows_and_keeps_the_first():
    a = np.array([[0, 0, 10, 10], [5, 5, 20, 30]], np.float32)
    b = np.array([[1, 2, 3, 4]], np.float32)
    padded = proposals.pad_proposals([a, b, np.zeros((0, 4))])
    assert padded.shape == (3, 2, 4) and padded.dtype == np.float32
    np.testing.assert_array_equal(padded[0], a)
    np.testing.assert_array_equal(padded[1], [[1, 2, 3, 4], [0, 0, 0, 0]])
    np.testing.assert_array_equal(padded[2], 0)
    np.testing.assert_array_equal(proposals.pad_proposals([a, b], max_proposals=1)[:, 0], [a[0], b[0]])
    assert proposals.pad_proposals([], max_proposals=None).shape == (0, 1, 4)


def test_proposals_dataset_batches_images_proposals_and_targets():
    images, boxes, labels = generate_shapes(5, image_size=(H, W), seed=0)
    per_image = [boxes[i][labels[i] >= 0] for i in range(5)]
    dataset = proposals.proposals_dataset(
        images, per_image, {"boxes": boxes, "labels": labels}, batch_size=2, max_proposals=4
    )
    batches = list(dataset)
    assert len(batches) == 3
    x, y = batches[0]
    assert x["images"].dtype.name == "float32" and x["images"].shape == (2, H, W, 3)
    assert x["proposals"].shape == (2, 4, 4)
    np.testing.assert_array_equal(x["proposals"].numpy(), proposals.pad_proposals(per_image[:2], 4))
    np.testing.assert_array_equal(y["labels"].numpy(), labels[:2])
    only_inputs = next(iter(proposals.proposals_dataset(images, per_image, batch_size=5)))
    assert set(only_inputs) == {"images", "proposals"}


def test_add_proposals_follows_image_ids_and_resizing(tmp_path):
    import cv2

    from rcnn_zoo.data import DetectionRecord, make_tf_dataset

    records, per_image = [], []
    for i, (h, w) in enumerate([(60, 80), (90, 70), (50, 100)]):
        path = str(tmp_path / f"{i}.png")
        cv2.imwrite(path, np.full((h, w, 3), 40 * i, np.uint8))
        records.append(DetectionRecord(path, i, [[1, 2, 30, 40]], [0], [False], h, w))
        per_image.append(np.array([[i, 0, 10 + i, 20], [0, 0, w, h]], np.float32)[: 1 + i % 2])
    dataset = make_tf_dataset(records, batch_size=2, training=True, flip=False, min_size=120,
                              shuffle=True, seed=1, return_metadata=True)
    seen = set()
    for x, y in proposals.add_proposals(dataset, per_image, max_proposals=3):
        assert set(x) == {"images", "image_sizes", "proposals"} and x["proposals"].shape[1:] == (3, 4)
        for b, index in enumerate(y["image_id"].numpy()):
            sy, sx = y["scale"][b].numpy()
            expected = proposals.pad_proposals([per_image[index]], 3)[0] * [sx, sy, sx, sy]
            np.testing.assert_allclose(x["proposals"][b].numpy(), expected, rtol=1e-6)
            seen.add(int(index))
    assert seen == {0, 1, 2}
    with pytest.raises(ValueError, match="return_metadata"):
        proposals.add_proposals(make_tf_dataset(records, batch_size=2), per_image)


def test_add_proposals_mirrors_proposals_of_flipped_images(tmp_path):
    import cv2

    from rcnn_zoo.data import DetectionRecord, make_tf_dataset

    path = str(tmp_path / "img.png")
    cv2.imwrite(path, np.zeros((40, 100, 3), np.uint8))
    records = [DetectionRecord(path, 0, [[10, 5, 30, 25]], [0], [False], 40, 100)]
    dataset = make_tf_dataset(records, batch_size=1, training=True, flip=1.0, seed=0,
                              return_metadata=True)
    x, y = next(iter(proposals.add_proposals(dataset, [np.array([[10, 5, 30, 25]], np.float32)])))
    assert bool(y["flipped"][0])
    # mirrored in a 100 px wide image: x' = 100 - x
    np.testing.assert_allclose(x["proposals"][0, 0].numpy(), [70, 5, 90, 25])
    np.testing.assert_allclose(y["boxes"][0, 0].numpy(), [70, 5, 90, 25])
