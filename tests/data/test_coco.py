"""COCO JSON reader: category mapping, xywh → xyxy, crowd, bad data."""

import json
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from rcnn_zoo.data import DatasetError, DatasetWarning, read_coco
from rcnn_zoo.data import pipeline


def write_jpeg(path, width, height):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (width, height), (10, 200, 90)).save(path, "JPEG")


def write_json(path, data):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


def good_coco(tmp_path):
    image_dir = str(tmp_path / "images")
    write_jpeg(os.path.join(image_dir, "one.jpg"), 40, 30)
    write_jpeg(os.path.join(image_dir, "two.jpg"), 20, 20)
    data = {
        "images": [
            {"id": 7, "file_name": "one.jpg", "width": 40, "height": 30},
            {"id": 9, "file_name": "two.jpg", "width": 20, "height": 20},
        ],
        # Sparse ids, listed out of order: labels follow increasing id.
        "categories": [{"id": 18, "name": "dog"}, {"id": 3, "name": "car"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 18, "bbox": [2, 3, 10, 5], "area": 40.0},
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [0, 0, 40, 30], "iscrowd": 1,
             "area": 900.0},
            {"id": 3, "image_id": 9, "category_id": 3, "bbox": [1.5, 2.5, 4, 4]},
        ],
    }
    path = str(tmp_path / "instances.json")
    write_json(path, data)
    return path, image_dir, data


def test_reads_categories_boxes_crowd_and_areas(tmp_path):
    path, image_dir, _ = good_coco(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = read_coco(path, image_dir)
    assert ds.class_names == ["car", "dog"] and ds.category_ids == [3, 18]
    assert [r.image_id for r in ds] == [7, 9]
    one, two = ds
    np.testing.assert_array_equal(one.boxes, [[2, 3, 12, 8], [0, 0, 40, 30]])
    np.testing.assert_array_equal(one.labels, [1, 0])
    np.testing.assert_array_equal(one.difficult, [False, True])  # iscrowd
    np.testing.assert_array_equal(one.areas, [40, 900])
    np.testing.assert_allclose(two.boxes, [[1.5, 2.5, 5.5, 6.5]])
    np.testing.assert_array_equal(two.areas, [16])  # no "area": box area
    assert (one.height, one.width) == (30, 40)
    assert ds.class_counts(include_difficult=False) == {"car": 1, "dog": 1}
    # Crowd regions stay out of training batches, and are marked for evaluation.
    _, train = next(iter(ds.to_tf_dataset(batch_size=2, training=True, shuffle=False)))
    np.testing.assert_array_equal(train["labels"].numpy(), [[1], [0]])
    _, val = next(iter(ds.to_tf_dataset(batch_size=2)))
    np.testing.assert_array_equal(val["difficult"].numpy(), [[False, True], [False, False]])


def test_bad_data_is_skipped_and_reported(tmp_path):
    path, image_dir, data = good_coco(tmp_path)
    with open(os.path.join(image_dir, "broken.jpg"), "wb") as f:
        f.write(b"\xff\xd8 not really")
    data["images"] += [
        {"id": 20, "file_name": "missing.jpg", "width": 10, "height": 10},
        {"id": 21, "file_name": "broken.jpg", "width": 10, "height": 10},
        {"id": 22, "width": 10, "height": 10},  # no file_name
    ]
    data["annotations"] += [
        {"id": 10, "image_id": 7, "category_id": 99, "bbox": [1, 1, 2, 2]},  # unknown category
        {"id": 11, "image_id": 7, "category_id": 3, "bbox": [1, 1, 2]},  # malformed bbox
        {"id": 12, "image_id": 7, "category_id": 3, "bbox": [5, 5, 0, 4]},  # zero width
        {"id": 13, "image_id": 7, "category_id": 3, "bbox": [50, 5, 4, 4]},  # wholly outside
        {"id": 14, "image_id": 7, "category_id": 3, "bbox": [30, 20, 20, 20]},  # clipped
        {"id": 15, "image_id": 123, "category_id": 3, "bbox": [1, 1, 2, 2]},  # unknown image
        {"id": 16, "image_id": 20, "category_id": 3, "bbox": [1, 1, 2, 2]},  # of missing image
    ]
    write_json(path, data)
    with pytest.warns(DatasetWarning) as caught:
        ds = read_coco(path, image_dir)
    assert len(caught) == 1
    message = str(caught[0].message)
    for text in ("missing.jpg", "broken.jpg", "images[4]", "annotations[3]", "annotations[8]"):
        assert text in message
    assert [r.image_id for r in ds] == [7, 9]
    np.testing.assert_array_equal(ds[0].boxes, [[2, 3, 12, 8], [0, 0, 40, 30], [30, 20, 40, 30]])
    counts = {kind: len(entries) for kind, entries in ds.problems.items()}
    assert counts == {
        pipeline.MALFORMED_ANNOTATION: 3,  # images[4], annotations[4] bbox, annotations[8] image
        pipeline.MISSING_FILE: 1,
        pipeline.UNREADABLE_IMAGE: 1,
        pipeline.UNKNOWN_CLASS: 1,
        pipeline.EMPTY_BOX: 1,
        pipeline.BOX_OUTSIDE: 1,
        pipeline.BOX_CLIPPED: 1,
    }
    assert "annotations[3]" in ds.problems[pipeline.UNKNOWN_CLASS][0]
    with pytest.raises(DatasetError, match=r"instances.json images\[4\]"):
        read_coco(path, image_dir, strict=True)
    del data["images"][4]
    write_json(path, data)
    with pytest.raises(DatasetError, match="missing.jpg"):
        read_coco(path, image_dir, strict=True)


def test_unreadable_json_raises_naming_the_file(tmp_path):
    path = str(tmp_path / "bad.json")
    with open(path, "w") as f:
        f.write('{"images": [')
    with pytest.raises(DatasetError, match="bad.json"):
        read_coco(path, str(tmp_path))
    write_json(path, {"images": []})
    with pytest.raises(DatasetError, match="bad.json"):
        read_coco(path, str(tmp_path))
