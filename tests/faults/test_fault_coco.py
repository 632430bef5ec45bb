"""``rcnn-zoo train --format coco`` on COCO JSON made from copies of real photos: damaged
entries are skipped and named, damaged JSON files stop with one line naming the file."""

import json

import pytest

from faultkit import (
    MODEL_ARGS,
    VocCopy,
    assert_finite_history,
    assert_finite_weights,
    assert_kind,
    assert_ok,
    assert_usage_error,
    coco_from_voc,
    run_cli,
    show,
    training_images,
    truncate,
    warning_of,
    write_json,
)

PHOTOS = {"c0": "raccoon-136", "c1": "raccoon-137", "c2": "raccoon-138", "c3": "raccoon-139",
          "c4": "raccoon-14", "c5": "raccoon-140", "ctrunc": "raccoon-141"}


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """Photos in ``images/``; ``train.json`` (c0-c3 good + damage) and ``val.json`` (c4, c5 good
    + damage)."""
    voc = VocCopy(tmp_path_factory.mktemp("coco") / "data")
    for stem, photo in PHOTOS.items():
        voc.add(stem, photo)
    truncate(voc.image("ctrunc"))
    train = coco_from_voc(voc, ["c0", "c1", "c2", "c3"])
    w3, h3 = voc.sizes["c3"]
    train["images"] += [
        {"id": 1, "file_name": "c3.jpg", "width": w3, "height": h3},  # images[4]: id of images[0]
        {"id": 50, "file_name": "c2.jpg", "width": 10, "height": 10},  # images[5]: file of images[2]
        {"id": 60, "file_name": "gone.jpg", "width": 10, "height": 10},  # images[6]: no such file
        {"id": 61, "file_name": "ctrunc.jpg"},  # images[7]: truncated JPEG
        {"id": [7], "file_name": "c1.jpg"},  # images[8]: a list as id
    ]
    n = len(train["annotations"])  # 4, one per photo
    train["annotations"] += [
        {"id": 100, "image_id": 1, "category_id": 1, "bbox": [float("nan"), 1, 5, 5]},  # n+0: NaN
        {"id": 101, "image_id": 2, "category_id": 1, "bbox": [10, 10, float("inf"), 5]},  # n+1: inf
        {"id": 102, "image_id": 777, "category_id": 1, "bbox": [1, 1, 5, 5]},  # n+2: unknown image
        {"id": 103, "image_id": 3, "category_id": 99, "bbox": [1, 1, 5, 5]},  # n+3: unknown category
        {"id": 104, "image_id": 3, "category_id": 1, "bbox": [30, 30, -20, 10]},  # n+4: inverted
        {"id": 105, "image_id": 4, "category_id": 1, "bbox": [w3 - 10, 2, 40, 20]},  # n+5: clipped
        {"id": 106, "image_id": 50, "category_id": 1, "bbox": [1, 1, 5, 5]},  # of the skipped dup
    ]
    val = coco_from_voc(voc, ["c4", "c5"], first_id=10)
    val["images"].append({"id": 12, "file_name": "ctrunc.jpg"})
    val["annotations"] += [
        {"id": 200, "image_id": 10, "category_id": 1, "bbox": ["1", 1, 5, 5]},  # [2]: a string
        {"id": 201, "image_id": 11, "category_id": 5, "bbox": [1, 1, 5, 5]},  # [3]: unknown category
    ]
    root = voc.root
    return {"root": root, "images": voc.images, "train": write_json(f"{root}/train.json", train),
            "val": write_json(f"{root}/val.json", val), "n": n, "train_data": train}


@pytest.fixture(scope="module")
def coco_run(coco, tmp_path_factory):
    out = tmp_path_factory.mktemp("coco_run") / "out"
    result = run_cli("train", "--format", "coco", "--annotations", coco["train"], "--images", coco["images"],
                     "--val-annotations", coco["val"], "--val-images", coco["images"], *MODEL_ARGS,
                     "--output-dir", out)
    return {"result": result, "out": out}


def test_coco_train_uses_the_good_images(coco_run):
    result = coco_run["result"]
    assert_ok(result)
    assert training_images(result.stdout) == (4, 2), show(result)
    # c0-c3 with their own box each, plus c3's clipped box
    assert "1 class(es) found in 4 training images: raccoon (4 images, 5 objects)" in result.stdout
    assert_finite_history(coco_run["out"])
    assert list(assert_finite_weights(coco_run["out"] / "last.keras").class_names) == ["raccoon"]


def test_coco_train_names_every_bad_entry(coco_run, coco):
    n = coco["n"]
    warning = warning_of(coco_run["result"].stderr, "train.json")
    assert_kind(warning, "duplicate image (only the first kept)", 2,
                "images[4]: id 1 is also the id of images[0]",
                "images[5]: file 'c2.jpg' is also the file of images[2]")
    assert_kind(warning, "missing file", 1, "gone.jpg")
    assert_kind(warning, "unreadable image", 1, "ctrunc.jpg: truncated or damaged image data")
    assert_kind(warning, "malformed annotation", 2, "images[8]: 'id' [7] is not an integer",
                f"annotations[{n + 2}]: unknown image_id 777")
    assert_kind(warning, "box with NaN or infinite coordinates", 2, f"annotations[{n}]: box [nan",
                f"annotations[{n + 1}]: box [10.0, 10.0, inf")
    assert_kind(warning, "unknown class", 1, f"annotations[{n + 3}]: category_id 99")
    assert_kind(warning, "zero-area or inverted box", 1, f"annotations[{n + 4}]")
    assert_kind(warning, "box partly outside the image (clipped, kept)", 1, f"annotations[{n + 5}]")
    assert "annotations[%d]" % (n + 6) not in warning["text"]  # its image entry was reported
    assert len(warning["kinds"]) == 8, warning["text"]


def test_coco_validation_json_problems_are_named(coco_run):
    warning = warning_of(coco_run["result"].stderr, "val.json")
    assert set(warning["kinds"]) == {"unreadable image", "malformed annotation", "unknown class"}
    assert_kind(warning, "unreadable image", 1, "ctrunc.jpg")
    assert_kind(warning, "malformed annotation", 1, "annotations[2]: bbox ['1', 1, 5, 5]")
    assert_kind(warning, "unknown class", 1, "annotations[3]: category_id 5")


@pytest.mark.parametrize("damage, which, message", [
    ("empty", "train", "cannot read COCO JSON (the file is empty)"),
    ("truncated", "train", "cannot read COCO JSON (not valid JSON (cut short?)"),
    ("list", "train", "not a COCO instances file (the top level is a list"),
    ("no images", "val", "'images' is missing or not a list"),
])
def test_a_damaged_coco_json_stops_with_one_line_naming_it(damage, which, message, coco, tmp_path):
    good = json.dumps(coco["train_data"])
    bad = tmp_path / f"{which}.json"
    bad.write_text({"empty": "", "truncated": good[: len(good) // 2], "list": json.dumps([coco["train_data"]]),
                    "no images": json.dumps({"annotations": [], "categories": []})}[damage])
    train = bad if which == "train" else coco["train"]
    val = ["--val-annotations", bad, "--val-images", coco["images"]] if which == "val" else []
    out = tmp_path / "out"
    result = run_cli("train", "--format", "coco", "--annotations", train, "--images", coco["images"], *val,
                     *MODEL_ARGS, "--output-dir", out)
    assert_usage_error(result, str(bad), message)
    assert "Training" not in result.stdout and not out.exists()
