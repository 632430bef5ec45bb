"""``rcnn-zoo evaluate``, ``predict`` and ``export`` of the shared model (trained on the damaged
folder, see ``conftest.py``) on damaged data, as a user runs them."""

import json
import math
import os
import re
import shutil

from fault_cases import EXPECTED

from faultkit import (
    assert_kind,
    assert_ok,
    assert_sane,
    assert_usage_error,
    coco_from_voc,
    copy_photo,
    empty,
    run_cli,
    show,
    text_file,
    truncate,
    warning_of,
    write_json,
)


def _assert_results(path, num_images):
    with open(path, encoding="utf-8") as f:
        results = json.load(f)
    assert results["num_images"] == num_images, results
    for metric in ("voc", "coco"):
        if metric in results:
            value = results[metric]["mAP"]
            assert isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0, results[metric]
    return results


# ------------------------------------------------------------------------------------------
# evaluate


def test_evaluate_on_a_damaged_test_split(trained_model, damaged_voc, tmp_path):
    output = tmp_path / "results.json"
    result = run_cli("evaluate", "--model", trained_model, "--data", damaged_voc.root, "--split", "test",
                     "--output", output, "--verbose", 0)
    assert_ok(result)
    assert f"(test.txt): {EXPECTED['test']['images']} images." in result.stdout, show(result)
    # test0 1, test1 2, test2 1, testdog 1 raccoon (the dog is not a model class)
    assert re.search(r"^raccoon\s+5\s+\d\.\d{4}$", result.stdout, re.M), show(result)
    assert re.search(r"^mAP\s+5\s+\d\.\d{4}$", result.stdout, re.M), show(result)
    warning = warning_of(result.stderr, "split=test.txt")
    assert warning["skipped"] == EXPECTED["test"]["skipped"]
    assert set(warning["kinds"]) == set(EXPECTED["test"]["kinds"]), warning["text"]
    for kind, (count, files) in EXPECTED["test"]["kinds"].items():
        assert_kind(warning, kind, count, *files)
    results = _assert_results(output, EXPECTED["test"]["images"])
    assert results["num_objects"] == {"raccoon": 5}


def test_evaluate_coco_json_with_damaged_entries(trained_model, damaged_voc, tmp_path):
    data = coco_from_voc(damaged_voc, ["test0", "test1", "test2"])
    data["images"] += [
        {"id": 90, "file_name": "test0.jpg"},  # images[3]: file of images[0]
        {"id": 91, "file_name": "testtext.jpg"},  # images[4]: a text file
        {"id": 92, "file_name": "no_such.jpg"},  # images[5]: missing
    ]
    n = len(data["annotations"])
    data["annotations"] += [
        {"id": 900, "image_id": 2, "category_id": 1, "bbox": [5, 5, float("nan"), 5]},  # NaN
        {"id": 901, "image_id": 2, "category_id": 1, "bbox": [5, 5, 10]},  # 3 numbers
    ]
    path = write_json(tmp_path / "test.json", data)
    output = tmp_path / "results.json"
    result = run_cli("evaluate", "--model", trained_model, "--format", "coco", "--annotations", path,
                     "--images", damaged_voc.images, "--metric", "coco", "voc", "--output", output,
                     "--verbose", 0)
    assert_ok(result)
    assert f"COCO {path}: 3 images." in result.stdout, show(result)
    assert re.search(r"^mAP\s+4\s+\d\.\d{4}\s+\d\.\d{4}$", result.stdout, re.M), show(result)
    warning = warning_of(result.stderr, "test.json")
    assert set(warning["kinds"]) == {"duplicate image (only the first kept)", "unreadable image",
                                     "missing file", "box with NaN or infinite coordinates",
                                     "malformed annotation"}, warning["text"]
    assert_kind(warning, "duplicate image (only the first kept)", 1, "images[3]: file 'test0.jpg'")
    assert_kind(warning, "unreadable image", 1, "testtext.jpg: not an image")
    assert_kind(warning, "missing file", 1, "no_such.jpg")
    assert_kind(warning, "box with NaN or infinite coordinates", 1, f"annotations[{n}]")
    assert_kind(warning, "malformed annotation", 1, f"annotations[{n + 1}]: bbox [5, 5, 10]")
    _assert_results(output, 3)


def test_evaluate_on_a_split_without_one_usable_image_stops(trained_model, damaged_voc, tmp_path):
    split = tmp_path / "allbad.txt"
    split.write_text("testtext\ntestxml\nno_such_stem\n")
    result = run_cli("evaluate", "--model", trained_model, "--data", damaged_voc.root, "--split", split,
                     "--verbose", 0)
    assert_usage_error(result, "no usable images in VOC", "allbad.txt")
    warning = warning_of(result.stderr, "split=allbad.txt")
    assert_kind(warning, "unreadable image", 1, "testtext.jpg")
    assert_kind(warning, "malformed annotation", 1, "testxml.xml")
    assert_kind(warning, "missing file", 1, "no_such_stem.xml")
    assert "Evaluating" not in result.stdout


# ------------------------------------------------------------------------------------------
# predict


def test_predict_on_a_folder_with_damaged_files(trained_model, tmp_path):
    folder = tmp_path / "photos"
    good = {"a_good.jpg": "raccoon-142", "c_good.jpg": "raccoon-143", "e_good.jpg": "raccoon-144"}
    for name, photo in good.items():
        copy_photo(photo, str(folder / name))
    shutil.copy(folder / "a_good.jpg", folder / "b_truncated.jpg")
    truncate(folder / "b_truncated.jpg")
    empty(folder / "d_empty.jpg")
    text_file(folder / "f_notes.jpg")
    out = tmp_path / "detections"
    result = run_cli("predict", "--model", trained_model, "--images", folder, "--output-dir", out,
                     "--score-threshold", 0.0, "--verbose", 0)
    assert_sane(result)
    # Some files could not be read: never exit 0; the good ones are processed anyway.
    assert result.returncode == 2, show(result)
    assert "in 3 of 6 image(s)" in result.stdout, show(result)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("rcnn-zoo: warning: skipped")]
    assert len(warnings) == 3, show(result)  # one line per reason
    for name in ("b_truncated.jpg", "d_empty.jpg", "f_notes.jpg"):
        assert sum(name in line for line in warnings) == 1, show(result)
    assert_usage_error(result, "3 of 6 image files could not be read")
    entries = json.loads((out / "detections.json").read_text())
    assert [os.path.basename(e["image"]) for e in entries] == sorted(os.listdir(folder))
    failed = {os.path.basename(e["image"]): e["error"] for e in entries if "error" in e}
    assert set(failed) == {"b_truncated.jpg", "d_empty.jpg", "f_notes.jpg"}
    assert sorted(p.name for p in out.glob("*.png")) == ["a_good.png", "c_good.png", "e_good.png"]
    for entry in entries:
        if "error" not in entry:
            assert all(math.isfinite(v) for box in entry["boxes"] for v in box)
            assert all(0.0 <= s <= 1.0 for s in entry["scores"])


# ------------------------------------------------------------------------------------------
# export


def test_export_of_the_trained_model(trained_model, tmp_path):
    output = tmp_path / "serving" / "raccoon" / "1"
    result = run_cli("export", "--model", trained_model, "--output", output)
    assert_ok(result)
    assert (output / "saved_model.pb").is_file() and (output / "variables").is_dir()
    assert "1=raccoon" in result.stdout, show(result)


def test_export_of_a_truncated_model_file_stops_with_one_line(trained_model, tmp_path):
    damaged = tmp_path / "cut.keras"
    shutil.copy(trained_model, damaged)
    truncate(damaged)
    output = tmp_path / "serving" / "1"
    result = run_cli("export", "--model", damaged, "--output", output)
    assert_usage_error(result, str(damaged))
    assert not output.exists()
