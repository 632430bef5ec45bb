"""The Python API on the same damaged data: ``read_voc``, ``read_coco``, ``load_dataset``,
``check_image`` and ``training_dataset`` + ``model.fit``."""

import os
import warnings

import numpy as np
import pytest
from fault_cases import EXPECTED
from PIL import Image

from rcnn_zoo.data import (
    DatasetError,
    DatasetWarning,
    load_dataset,
    read_coco,
    read_voc,
    steps_per_epoch,
    training_dataset,
)
from rcnn_zoo.data import pipeline
from rcnn_zoo.errors import UsageError

from faultkit import VocCopy, coco_from_voc, write_json


def _read(*args, **kwargs):
    with pytest.warns(DatasetWarning) as caught:
        dataset = read_voc(*args, **kwargs)
    assert len(caught) == 1, [str(w.message) for w in caught]
    return dataset, str(caught[0].message)


@pytest.fixture(scope="module")
def train_set(damaged_voc):
    return _read(damaged_voc.root, "train", check_images="decode")


def test_read_voc_keeps_the_good_part_and_reports_each_kind(train_set, damaged_voc):
    dataset, message = train_set
    assert [r.image_id for r in dataset] == ["good0", "good1", "good2", "good3", "noobj", "dropped",
                                             "clipped", "resized"]
    counts = {kind: len(entries) for kind, entries in dataset.problems.items()}
    assert counts == {kind: count for kind, (count, _) in EXPECTED["train"]["kinds"].items()}
    for kind, (_, files) in EXPECTED["train"]["kinds"].items():
        for name in files:
            assert any(name in entry for entry in dataset.problems[kind]), (kind, name)
            assert name in message
    by_id = {r.image_id: r for r in dataset}
    assert len(by_id["noobj"].labels) == 0 and len(by_id["dropped"].labels) == 0
    clipped = by_id["clipped"]
    width, height = damaged_voc.sizes["clipped"]
    np.testing.assert_array_equal(clipped.boxes, [[0, 4, 40, height]])  # VOC (-10, 5, 40, h+20)
    assert (by_id["resized"].width, by_id["resized"].height) == damaged_voc.sizes["resized"]
    for record in dataset:
        assert np.all(np.isfinite(record.boxes))
        assert np.all((record.boxes[:, 2:] > record.boxes[:, :2]))


def test_strict_read_voc_raises_naming_the_first_bad_file(damaged_voc):
    with pytest.raises(DatasetError, match=r"malformed annotation: .*badxml\.xml"):
        read_voc(damaged_voc.root, "train", strict=True)


def test_load_dataset_turns_reader_errors_into_one_line_usage_errors(damaged_voc, tmp_path):
    missing = tmp_path / "no_such.txt"
    with pytest.raises(UsageError, match=f"^split file not found: {missing}$"):
        load_dataset(damaged_voc.root, "voc", str(missing))
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00\x01raccoon-1\n")
    with pytest.raises(UsageError, match=f"split file {binary} is not a text file"):
        load_dataset(damaged_voc.root, "voc", str(binary))
    only_bad = tmp_path / "bad.txt"
    only_bad.write_text("trunc\nzero\ntext\n")
    with pytest.warns(DatasetWarning), pytest.raises(UsageError, match="no usable images in VOC .*bad.txt"):
        load_dataset(damaged_voc.root, "voc", str(only_bad))
    # The validation split read with the training classes: the extra class is reported.
    with pytest.warns(DatasetWarning, match=r"unknown class: 1 object\(s\): .*valdog\.xml: object 1 class 'dog'"):
        val = load_dataset(damaged_voc.root, "voc", "val", class_names=["raccoon"])
    assert len(val) == EXPECTED["val"]["images"]


def test_a_png_that_pil_reads_but_tensorflow_does_not_is_unreadable(tmp_path):
    """The root cause of a crash in training: a PNG cut just before its end chunk passed the
    reader's decode check (PIL) and stopped ``model.fit`` with a TensorFlow traceback."""
    voc = VocCopy(tmp_path / "voc")
    voc.add("good", "raccoon-145")
    voc.add("cut", "raccoon-146")
    png = os.path.join(voc.images, "cut.png")
    with Image.open(voc.image("cut")) as photo:
        photo.save(png)
    os.remove(voc.image("cut"))
    data = open(png, "rb").read()
    assert data[-12:-4] == b"\x00\x00\x00\x00IEND"
    with open(png, "wb") as f:
        f.write(data[:-12])  # all pixel data there, the IEND chunk missing
    with pytest.raises(pipeline.UnreadableImageError, match="TensorFlow cannot decode it"):
        pipeline.check_image(png, "decode")
    assert pipeline.check_image(png, "header") == voc.sizes["cut"][::-1]  # a header check passes
    with pytest.warns(DatasetWarning, match=r"unreadable image: 1 image\(s\): .*cut\.png: truncated or damaged"):
        dataset = load_dataset(voc.root, "voc")
    assert [r.image_id for r in dataset] == ["good"]


def test_check_image_says_why_in_words(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.jpg"
    text.write_text("hello")
    header_only = tmp_path / "header.jpg"
    header_only.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 12)
    for path, reason in ((empty, "empty file (0 bytes)"), (text, "not an image"),
                         (header_only, "truncated or damaged image data"), (tmp_path, "a folder")):
        with pytest.raises(pipeline.UnreadableImageError) as raised:
            pipeline.check_image(str(path), "decode")
        assert str(raised.value).startswith(reason)
        assert str(path) not in str(raised.value)  # the reader's report names the file
    with pytest.raises(FileNotFoundError):
        pipeline.check_image(str(tmp_path / "gone.jpg"))


def test_read_coco_duplicates_and_unhashable_ids_are_reported(damaged_voc, tmp_path):
    data = coco_from_voc(damaged_voc, ["good0", "good1"])
    data["images"] += [{"id": 1, "file_name": "good2.jpg"}, {"id": {"a": 1}, "file_name": "good3.jpg"}]
    data["annotations"] += [{"id": 9, "image_id": [1], "category_id": 1, "bbox": [1, 1, 5, 5]},
                            {"id": 10, "image_id": 1, "category_id": {"x": 1}, "bbox": [1, 1, 5, 5]}]
    path = write_json(tmp_path / "x.json", data)
    with pytest.warns(DatasetWarning) as caught:
        dataset = read_coco(path, damaged_voc.images)
    assert len(caught) == 1
    assert [r.image_id for r in dataset] == [1, 2]
    assert [len(r.labels) for r in dataset] == [1, 1]
    counts = {kind: len(entries) for kind, entries in dataset.problems.items()}
    assert counts == {pipeline.DUPLICATE_IMAGE: 1, pipeline.MALFORMED_ANNOTATION: 2, pipeline.UNKNOWN_CLASS: 1}
    with pytest.raises(DatasetError, match=r"images\[2\]: id 1 is also the id of images\[0\]"):
        read_coco(path, damaged_voc.images, strict=True)
    data["categories"].append({"id": 1, "name": "dog"})
    write_json(path, data)
    with pytest.raises(DatasetError, match=r"categories\[1\] has the id 1 of categories\[0\]"):
        read_coco(path, damaged_voc.images)


def test_training_dataset_and_fit_on_the_good_part(train_set):
    import keras  # noqa: PLC0415

    import rcnn_zoo  # noqa: PLC0415

    dataset, _ = train_set
    batches = training_dataset(dataset, batch_size=2, min_size=96, max_size=160, flip=0.5, seed=0)
    steps = steps_per_epoch(dataset, 2)
    labels = [t["labels"].numpy() for _, t in batches]
    assert len(labels) == steps
    assert sum(int((lab >= 0).sum()) for lab in labels) == 6  # the objects left
    keras.utils.set_random_seed(0)
    model = rcnn_zoo.FasterRCNN(num_classes=1, class_names=["raccoon"], backbone="tiny",
                                image_min_size=96, image_max_size=160)
    model.compile()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ran out of data.*")
        history = model.fit(batches, epochs=1, steps_per_epoch=1, verbose=0)
    assert all(np.isfinite(v[0]) for v in history.history.values()), history.history
    assert all(np.all(np.isfinite(keras.ops.convert_to_numpy(w))) for w in model.weights)
