"""``rcnn-zoo train`` on damaged copies of real photos, run as a user runs it.

Each run either trains on the good part (exit 0, the good images counted, finite losses and
weights) and names every bad file in the one readable warning per split (a line per problem
kind with its count and the files), or stops with exit code 2 and one ``rcnn-zoo: error:`` line
naming the file or option, without training and without writing the output folder.
"""

import os

import pytest
from fault_cases import EXPECTED
from PIL import Image

from faultkit import (
    MODEL_ARGS,
    VocCopy,
    assert_finite_history,
    assert_finite_weights,
    assert_kind,
    assert_ok,
    assert_sane,
    assert_usage_error,
    empty,
    run_cli,
    show,
    text_file,
    training_images,
    truncate,
    warning_of,
)


def _assert_split_warning(stderr, split, expected):
    warning = warning_of(stderr, f"split={split}.txt")
    assert warning["skipped"] == expected["skipped"], warning["text"]
    assert set(warning["kinds"]) == set(expected["kinds"]), warning["text"]
    for kind, (count, files) in expected["kinds"].items():
        assert_kind(warning, kind, count, *files)
    return warning


# ------------------------------------------------------------------------------------------
# The shared run: --split train --val-split val on the damaged folder


def test_train_uses_the_good_images_and_validates_on_the_good_val_images(trained_run):
    result = trained_run["result"]
    assert_ok(result)
    assert training_images(result.stdout) == (EXPECTED["train"]["images"], EXPECTED["val"]["images"])
    # 6 of the 8 images have objects left (noobj and dropped have none): all raccoons.
    assert "1 class(es) found in 8 training images: raccoon (6 images, 6 objects)" in result.stdout
    assert "Best val_mAP" in result.stdout


def test_train_names_every_bad_training_file_once_per_kind(trained_run):
    stderr = trained_run["result"].stderr
    warning = _assert_split_warning(stderr, "train", EXPECTED["train"])
    # Files that are fine, or only changed, are not reported as skipped.
    for fine in ("good0", "good1", "good2", "good3", "noobj"):
        assert f"{fine}." not in warning["text"]


def test_train_names_every_bad_validation_file(trained_run):
    _assert_split_warning(trained_run["result"].stderr, "val", EXPECTED["val"])


def test_train_writes_finite_history_and_weights(trained_run, trained_model):
    out = trained_run["out"]
    rows = assert_finite_history(out)
    assert float(rows[0]["val_mAP"]) >= 0.0
    for name in ("last.keras", "best.keras", "history.csv", "config.json"):
        assert (out / name).is_file(), name
    model = assert_finite_weights(trained_model)
    assert list(model.class_names) == ["raccoon"]


# ------------------------------------------------------------------------------------------
# Without --val-split: a misspelt class, duplicates, NaN / inf / non-numeric numbers


def _convert(path, mode, new_path=None):
    """Re-save the image ``path`` in PIL ``mode`` (at ``new_path``, removing ``path``)."""
    with Image.open(path) as image:
        converted = image.convert(mode)
    if new_path:
        os.remove(path)
    converted.save(new_path or path)
    return new_path or path


@pytest.fixture(scope="module")
def second_run(tmp_path_factory):
    voc = VocCopy(tmp_path_factory.mktemp("classes") / "voc")
    for i, photo in enumerate(("raccoon-121", "raccoon-122", "raccoon-123")):
        voc.add(f"b{i}", photo)
    voc.add("typo", "raccoon-124", name="racoon")  # a new class, from one image
    voc.add("nan", "raccoon-125", objects=lambda w, h, b: [
        ("raccoon", "nan", 5, 40, 40), ("raccoon", 1, 1, "inf", 30), ("raccoon", *b[0])])
    voc.add("huge", "raccoon-126", objects=lambda w, h, b: [("raccoon", 2, 2, "1e400", 30)])
    voc.add("nonnum", "raccoon-127", objects=[("raccoon", "abc", 1, 20, 20)])
    voc.add("infsize", "raccoon-128")
    voc.write_xml("infsize", [("raccoon", *voc.boxes["infsize"][0])], size=("inf", "inf"))
    voc.add("infdiff", "raccoon-129", objects=lambda w, h, b: [("raccoon", *b[0], "inf")])
    # twin.xml: a copy of b1.xml's object whose <filename> is b1.jpg (there is no twin.jpg)
    voc.write_xml("twin", [("raccoon", 2, 2, 30, 30)], filename="b1.jpg", size=voc.sizes["b1"])
    # Unusual but valid files: trained on like the others.
    voc.add("gray", "raccoon-160")
    _convert(voc.image("gray"), "L")
    voc.add("cmyk", "raccoon-161")
    _convert(voc.image("cmyk"), "CMYK")
    voc.add("rgba", "raccoon-162")
    _convert(voc.image("rgba"), "RGBA", new_path=os.path.join(voc.images, "rgba.png"))
    # A PNG whose last chunk (IEND) is missing: PIL decodes it, TensorFlow does not. It once
    # passed the reader's check and stopped training half-way with a TensorFlow traceback.
    voc.add("cutpng", "raccoon-163")
    cut = _convert(voc.image("cutpng"), "RGB", new_path=os.path.join(voc.images, "cutpng.png"))
    with open(cut, "rb") as f:
        data = f.read()
    with open(cut, "wb") as f:
        f.write(data[:-12])
    voc.split("train", ["b0", "b1", "b2", "typo", "nan", "huge", "nonnum", "infsize", "infdiff",
                        "twin", "b0", "gray", "cmyk", "rgba", "cutpng"])
    out = tmp_path_factory.mktemp("classes_run") / "out"
    # No --split: the folder's train.txt; no --val-split.
    result = run_cli("train", "--data", voc.root, *MODEL_ARGS, "--output-dir", out)
    return {"result": result, "out": out, "voc": voc}


def test_a_new_class_is_named_in_the_class_summary(second_run):
    result = second_run["result"]
    assert_ok(result)
    # b0-b2, typo, nan, huge (its only box dropped), infsize, gray, cmyk, rgba; not nonnum,
    # infdiff, twin, the second b0, cutpng
    assert training_images(result.stdout) == (10, 0)
    assert ("2 class(es) found in 10 training images: raccoon (8 images, 8 objects), "
            "racoon (1 image, 1 object)") in result.stdout, show(result)
    assert "(raccoon, racoon)" in result.stdout


def test_nan_inf_non_numeric_duplicates_and_undecodable_files_are_named(second_run):
    warning = warning_of(second_run["result"].stderr, "split=train.txt")
    assert set(warning["kinds"]) == {"box with NaN or infinite coordinates", "malformed annotation",
                                     "duplicate image (only the first kept)", "unreadable image"}, warning["text"]
    assert_kind(warning, "unreadable image", 1, "cutpng.png: truncated or damaged image data (TensorFlow "
                "cannot decode it")
    assert_kind(warning, "box with NaN or infinite coordinates", 3,
                "nan.xml: object 0 'raccoon' box [nan", "nan.xml: object 1 'raccoon' box [1.0, 1.0, inf",
                "huge.xml: object 0")
    assert_kind(warning, "malformed annotation", 2, "nonnum.xml: object 0: could not convert string",
                "infdiff.xml: object 0: <difficult> is 'inf'")
    assert_kind(warning, "duplicate image (only the first kept)", 2, "train.txt: 'b0' is listed again",
                "twin.xml: its image", "b1.jpg is already annotated by", "b1.xml")
    assert warning["skipped"] == 8


def test_second_run_has_finite_losses_and_weights(second_run):
    assert_finite_history(second_run["out"])
    model = assert_finite_weights(second_run["out"] / "last.keras")
    assert list(model.class_names) == ["raccoon", "racoon"]


# ------------------------------------------------------------------------------------------
# Runs that must stop: exit 2, one line, nothing trained or written


def test_a_dataset_where_every_image_is_bad_stops_with_one_line(tmp_path):
    voc = VocCopy(tmp_path / "voc")
    voc.add("trunc", "raccoon-13")
    truncate(voc.image("trunc"))
    voc.add("zero", "raccoon-130")
    empty(voc.image("zero"))
    voc.add("text", "raccoon-131")
    text_file(voc.image("text"))
    voc.add("badxml", "raccoon-132")
    truncate(voc.xml("badxml"))
    voc.split("train", ["trunc", "zero", "text", "badxml", "ghost"])
    out = tmp_path / "out"
    result = run_cli("train", "--data", voc.root, "--split", "train", *MODEL_ARGS, "--output-dir", out)
    assert_usage_error(result, "no usable images in VOC", "train.txt")
    warning = warning_of(result.stderr, "split=train.txt")
    assert_kind(warning, "unreadable image", 3, "trunc.jpg: truncated or damaged image data",
                "zero.jpg: empty file (0 bytes)", "text.jpg: not an image")
    assert_kind(warning, "malformed annotation", 1, "badxml.xml")
    assert_kind(warning, "missing file", 1, "ghost.xml: annotation file not found")
    assert "Training" not in result.stdout and not out.exists()


def test_a_dataset_whose_boxes_are_all_dropped_stops_with_one_line(tmp_path):
    voc = VocCopy(tmp_path / "voc")
    voc.add("inverted", "raccoon-133", objects=[("raccoon", 60, 50, 10, 20)])
    voc.add("outside", "raccoon-134", objects=lambda w, h, b: [("raccoon", w + 5, 1, w + 50, 20)])
    voc.add("nan", "raccoon-135", objects=[("raccoon", "nan", "nan", "nan", "nan")])
    out = tmp_path / "out"
    result = run_cli("train", "--data", voc.root, *MODEL_ARGS, "--output-dir", out)
    assert_usage_error(result, "the training set", "has no objects")
    warning = warning_of(result.stderr, "split=all")
    assert_kind(warning, "zero-area or inverted box", 1, "inverted.xml")
    assert_kind(warning, "box wholly outside the image", 1, "outside.xml")
    assert_kind(warning, "box with NaN or infinite coordinates", 1, "nan.xml")
    assert not out.exists()


def test_a_split_file_that_does_not_exist_is_named_as_given(damaged_voc, tmp_path):
    missing = tmp_path / "lists" / "no_such.txt"
    out = tmp_path / "out"
    result = run_cli("train", "--data", damaged_voc.root, "--split", missing, *MODEL_ARGS,
                     "--output-dir", out)
    line = assert_usage_error(result, f"split file not found: {missing}")
    assert line == f"rcnn-zoo: error: split file not found: {missing}"
    assert not out.exists()


def test_a_validation_split_without_objects_is_reported(tmp_path):
    voc = VocCopy(tmp_path / "voc")
    voc.add("t0", "raccoon-147")
    voc.add("t1", "raccoon-148")
    voc.add("v0", "raccoon-149", objects=[])
    voc.add("v1", "raccoon-15", objects=[("raccoon", 60, 50, 10, 20)])  # inverted: dropped
    voc.split("train", ["t0", "t1"])
    voc.split("val", ["v0", "v1"])
    out = tmp_path / "out"
    result = run_cli("train", "--data", voc.root, "--split", "train", "--val-split", "val", *MODEL_ARGS,
                     "--output-dir", out)
    assert_sane(result)
    warning_of(result.stderr, "split=val.txt")  # the inverted box is named
    # As for a training set without objects: one line, exit code 2, nothing trained.
    assert_usage_error(result, "validation set", "has no objects")
    assert not (out / "last.keras").exists()
