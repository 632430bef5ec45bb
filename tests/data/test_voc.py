"""Pascal VOC reader: layouts, coordinate conversion, classes, difficult, bad data."""

import os
import warnings

import numpy as np
import pytest
from PIL import Image

from rcnn_zoo.data import (
    DatasetError,
    DatasetWarning,
    continuous_to_voc,
    read_voc,
    voc_to_continuous,
)
from rcnn_zoo.data import pipeline


def write_jpeg(path, width, height, color=(120, 60, 30)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (width, height), color).save(path, "JPEG")


def write_xml(path, filename, width, height, objects):
    """``objects``: ``(name, xmin, ymin, xmax, ymax[, difficult])`` in VOC 1-based pixels."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    parts = [
        "<annotation>",
        f"<filename>{filename}</filename>",
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>",
    ]
    for name, xmin, ymin, xmax, ymax, *rest in objects:
        difficult = rest[0] if rest else 0
        parts.append(
            f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
            f"<xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax>"
            "</bndbox></object>"
        )
    parts.append("</annotation>")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))


def write_lines(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def make_devkit(root):
    """VOC2007-style tree with three good images; trainval = a, b."""
    for stem, (w, h), objects in [
        ("a", (40, 30), [("dog", 1, 1, 10, 20), ("cat", 5, 6, 40, 30, 1)]),
        ("b", (50, 20), [("dog", 11, 2, 30, 19)]),
        ("c", (20, 20), [("bird", 1, 1, 20, 20)]),
    ]:
        write_jpeg(os.path.join(root, "JPEGImages", f"{stem}.jpg"), w, h)
        write_xml(os.path.join(root, "Annotations", f"{stem}.xml"), f"{stem}.jpg", w, h, objects)
    write_lines(os.path.join(root, "ImageSets", "Main", "trainval.txt"), ["a", "b"])
    write_lines(os.path.join(root, "ImageSets", "Main", "dog_trainval.txt"), ["a  1", "b  1"])
    return root


def read_quietly(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean tree must not warn
        return read_voc(*args, **kwargs)


def test_devkit_split_coordinates_classes_difficult(tmp_path):
    root = make_devkit(str(tmp_path / "VOC2007"))
    ds = read_quietly(root, "trainval")
    assert len(ds) == 2
    assert ds.class_names == ["cat", "dog"]  # sorted set found in the split
    a = ds[0]
    assert a.image_id == "a" and a.image_path.endswith(os.path.join("JPEGImages", "a.jpg"))
    assert (a.height, a.width) == (30, 40)
    # VOC (1, 1, 10, 20) inclusive → continuous (0, 0, 10, 20): a 10 x 20 pixel box.
    np.testing.assert_array_equal(a.boxes, [[0, 0, 10, 20], [4, 5, 40, 30]])
    assert a.boxes.dtype == np.float32
    np.testing.assert_array_equal(a.labels, [1, 0])
    np.testing.assert_array_equal(a.difficult, [False, True])
    np.testing.assert_array_equal(ds[1].boxes, [[10, 1, 30, 19]])
    assert ds.class_counts() == {"cat": 1, "dog": 2}
    assert ds.class_counts(include_difficult=False) == {"cat": 0, "dog": 2}
    assert ds.use_difficult is False and ds.problems == {}
    # All XMLs without a split; a per-class split file ("stem  1") also works.
    assert len(read_quietly(root)) == 3
    assert [r.image_id for r in read_quietly(root, "dog_trainval")] == ["a", "b"]
    gts = ds.ground_truths()
    assert len(gts) == 2 and gts[0][2].tolist() == [False, True]


def test_given_class_names_set_the_labels(tmp_path):
    root = make_devkit(str(tmp_path / "VOC2007"))
    ds = read_quietly(root, "trainval", class_names=["dog", "cat", "horse"])
    assert ds.num_classes == 3
    np.testing.assert_array_equal(ds[0].labels, [0, 1])
    assert ds.class_counts() == {"dog": 2, "cat": 1, "horse": 0}


def test_plain_folder_like_the_raccoon_set(tmp_path):
    root = str(tmp_path / "raccoon")
    for i, stem in enumerate(["r-1", "r-2", "r-3"]):
        write_jpeg(os.path.join(root, "images", f"{stem}.jpg"), 32, 24)
        write_xml(
            os.path.join(root, "annotations", f"{stem}.xml"),
            f"{stem}.jpg",
            32,
            24,
            [("raccoon", 2 + i, 3, 20, 24)],
        )
    write_lines(os.path.join(root, "train.txt"), ["r-1", "r-3"])
    write_lines(os.path.join(root, "test.txt"), ["r-2"])
    train = read_quietly(root, "train")
    assert [r.image_id for r in train] == ["r-1", "r-3"]
    assert train.class_names == ["raccoon"]
    np.testing.assert_array_equal(train[1].boxes, [[3, 2, 20, 24]])
    test = read_quietly(root, os.path.join(root, "test.txt"))  # a path works too
    assert [r.image_id for r in test] == ["r-2"]
    # Images and XMLs side by side in one folder.
    flat = str(tmp_path / "flat")
    write_jpeg(os.path.join(flat, "x.jpg"), 16, 16)
    write_xml(os.path.join(flat, "x.xml"), "x.jpg", 16, 16, [("thing", 1, 1, 8, 8)])
    (ds,) = [read_quietly(flat)]
    assert len(ds) == 1 and ds[0].image_path == os.path.join(flat, "x.jpg")
    with pytest.raises(FileNotFoundError, match="val.txt"):
        read_voc(root, "val")
    os.makedirs(tmp_path / "empty" / "annotations")
    with pytest.raises(ValueError, match="no images"):
        read_voc(str(tmp_path / "empty"))


def make_broken_folder(root):
    """Two usable images (good, boxes) and five that must be skipped."""
    images, annotations = os.path.join(root, "images"), os.path.join(root, "annotations")
    write_jpeg(os.path.join(images, "good.jpg"), 40, 30)
    write_xml(os.path.join(annotations, "good.xml"), "good.jpg", 40, 30, [("dog", 1, 1, 10, 10)])
    write_jpeg(os.path.join(images, "boxes.jpg"), 40, 30)
    write_xml(
        os.path.join(annotations, "boxes.xml"),
        "boxes.jpg",
        40,
        30,
        [
            ("dog", 2, 2, 20, 20),  # fine
            ("cat", -4, 11, 60, 25),  # partly outside: clipped to (0, 10, 40, 25)
            ("cat", 50, 5, 60, 10),  # wholly outside: dropped
            ("dog", 5, 5, 4, 10),  # zero area (x2 = x1): dropped
            ("dog", 9, 9, 3, 12),  # inverted: dropped
            ("zebra", 1, 1, 5, 5),  # unknown class: dropped
        ],
    )
    os.makedirs(images, exist_ok=True)
    with open(os.path.join(images, "unreadable.jpg"), "wb") as f:
        f.write(b"this is not a jpeg")
    write_xml(os.path.join(annotations, "unreadable.xml"), "unreadable.jpg", 40, 30, [])
    with open(os.path.join(annotations, "malformed.xml"), "w") as f:
        f.write("<annotation><object><name>dog</name>")  # truncated XML
    write_jpeg(os.path.join(images, "malformed.jpg"), 40, 30)
    write_xml(os.path.join(annotations, "noimage.xml"), "noimage.jpg", 40, 30, [])
    write_jpeg(os.path.join(images, "badnumber.jpg"), 40, 30)
    write_xml(
        os.path.join(annotations, "badnumber.xml"), "badnumber.jpg", 40, 30, [("dog", "a", 1, 5, 5)]
    )
    stems = ["good", "boxes", "unreadable", "malformed", "noimage", "badnumber", "ghost"]
    write_lines(os.path.join(root, "all.txt"), stems)
    return root


def test_bad_data_is_skipped_with_one_warning_naming_the_files(tmp_path):
    root = make_broken_folder(str(tmp_path / "broken"))
    with pytest.warns(DatasetWarning) as caught:
        ds = read_voc(root, "all", class_names=["cat", "dog"])
    assert len(caught) == 1
    message = str(caught[0].message)
    files = ("unreadable.jpg", "malformed.xml", "noimage.jpg", "ghost.xml", "badnumber.xml")
    for name in files + ("boxes.xml",):
        assert name in message

    assert [r.image_id for r in ds] == ["good", "boxes"]  # nothing else dropped
    boxes = ds[1]
    np.testing.assert_array_equal(boxes.boxes, [[1, 1, 20, 20], [0, 10, 40, 25]])
    np.testing.assert_array_equal(boxes.labels, [1, 0])
    counts = {kind: len(entries) for kind, entries in ds.problems.items()}
    assert counts == {
        pipeline.MISSING_FILE: 2,  # ghost.xml, noimage.jpg
        pipeline.MALFORMED_ANNOTATION: 2,  # malformed.xml, badnumber.xml
        pipeline.UNREADABLE_IMAGE: 1,
        pipeline.BOX_CLIPPED: 1,
        pipeline.BOX_OUTSIDE: 1,
        pipeline.EMPTY_BOX: 2,
        pipeline.UNKNOWN_CLASS: 1,
    }
    assert "ghost.xml" in ds.problems[pipeline.MISSING_FILE][0]
    assert "noimage.jpg" in ds.problems[pipeline.MISSING_FILE][1]
    assert "'zebra'" in ds.problems[pipeline.UNKNOWN_CLASS][0]


@pytest.mark.parametrize(
    "stem, expected",
    [
        ("unreadable", "unreadable.jpg"),
        ("malformed", "malformed.xml"),
        ("noimage", "noimage.jpg"),
        ("ghost", "ghost.xml"),
        ("boxes", "boxes.xml"),
    ],
)
def test_strict_mode_raises_naming_the_file(tmp_path, stem, expected):
    root = make_broken_folder(str(tmp_path / "broken"))
    write_lines(os.path.join(root, "one.txt"), [stem])
    with pytest.raises(DatasetError, match=expected):
        read_voc(root, "one", class_names=["cat", "dog"], strict=True)
    with pytest.warns(DatasetWarning, match=expected):
        read_voc(root, "one", class_names=["cat", "dog"])


def test_size_mismatch_uses_the_image_and_warns(tmp_path):
    root = str(tmp_path / "sizes")
    write_jpeg(os.path.join(root, "images", "s.jpg"), 40, 30)
    xml = os.path.join(root, "annotations", "s.xml")
    write_xml(xml, "s.jpg", 400, 300, [("dog", 1, 1, 10, 10)])
    with pytest.warns(DatasetWarning, match="s.xml"):
        ds = read_voc(root)
    assert (ds[0].height, ds[0].width) == (30, 40) and len(ds[0].labels) == 1
    # Trusting the XML instead (no image check) keeps its size.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_voc(root, check_images="none")[0].height == 300


def test_coordinate_conversions_are_inverse():
    voc = np.array([[1, 1, 10, 20], [5.5, 6, 40, 30]])
    continuous = voc_to_continuous(voc)
    np.testing.assert_array_equal(continuous, [[0, 0, 10, 20], [4.5, 5, 40, 30]])
    np.testing.assert_array_equal(continuous_to_voc(continuous), voc)
    # The VOC "+1" width of the file coordinates is the continuous width.
    np.testing.assert_array_equal(voc[:, 2] - voc[:, 0] + 1, continuous[:, 2] - continuous[:, 0])
