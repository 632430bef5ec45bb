"""``rcnn-zoo predict`` on folders with files that are not readable images (a truncated JPEG, an
empty .jpg, a text file named .jpg, garbage named .png) and with a damaged model file, through
the real entry point ``rcnn_zoo.cli.main``.

The photos are real ones (copies of the shared raccoon data set, downscaled to 96 px so that
the tiny detector runs in milliseconds); the damaged files are made from them here.
"""

import contextlib
import io
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

import rcnn_zoo
from rcnn_zoo import cli
from rcnn_zoo.inference import DAMAGED_IMAGE, EMPTY_FILE, NOT_AN_IMAGE, UnreadableImageWarning, predict_images

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RACCOON_IMAGES = os.path.join(REPO, os.pardir, "shared", "datasets", "raccoon", "images")
# Copy name -> photo. The damaged files' names sort between them: a photo comes first (the
# progress bar is drawn before the first bad file), others after the bad ones.
PHOTOS = {"p1_raccoon.jpg": "raccoon-1", "p4_raccoon.jpg": "raccoon-10", "p7_raccoon.jpg": "raccoon-100"}
# The keys of a detections.json entry of an image that was read (the format before failures).
ENTRY_KEYS = {"image", "output", "width", "height", "boxes", "scores", "labels", "class_names"}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "raccoon_tiny.keras"
    rcnn_zoo.FasterRCNN(num_classes=1, backbone="tiny", class_names=["raccoon"]).save(path)
    return path


def _copy_photos(folder):
    """Downscaled copies of real photos in ``folder``; returns {file name: (width, height)}."""
    if not os.path.isdir(RACCOON_IMAGES):
        pytest.fail(f"the raccoon photos are missing: {RACCOON_IMAGES}")
    folder.mkdir(exist_ok=True)
    sizes = {}
    for name, stem in PHOTOS.items():
        with Image.open(os.path.join(RACCOON_IMAGES, f"{stem}.jpg")) as photo:
            photo = photo.convert("RGB")
            photo.thumbnail((96, 96))
            photo.save(folder / name, quality=90)
            sizes[name] = photo.size
    return sizes


def _write_damaged(folder):
    """Files with image names that are no readable image; returns {file name: expected error}."""
    photo = (folder / "p1_raccoon.jpg").read_bytes()
    (folder / "p2_truncated.jpg").write_bytes(photo[: len(photo) // 2])  # a download cut short
    (folder / "p3_empty.jpg").write_bytes(b"")
    (folder / "p5_notes.jpg").write_text("not a picture: shopping list\n")
    (folder / "p6_garbage.png").write_bytes(np.random.default_rng(0).bytes(500))
    (folder / "p8_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + np.random.default_rng(1).bytes(500))
    return {
        "p2_truncated.jpg": DAMAGED_IMAGE,
        "p3_empty.jpg": EMPTY_FILE,
        "p5_notes.jpg": NOT_AN_IMAGE,
        "p6_garbage.png": NOT_AN_IMAGE,
        "p8_broken.png": DAMAGED_IMAGE,
    }


def _run(argv):
    """``cli.main(argv)`` with stdout and stderr into one stream, as a terminal shows them."""
    both = io.StringIO()
    with contextlib.redirect_stdout(both), contextlib.redirect_stderr(both):
        code = cli.main([str(a) for a in argv])
    return code, both.getvalue()


def _lines(output):
    """Lines as a terminal shows them: the progress bar redraws itself with \\r (and \\b)."""
    return [line.strip("\b") for line in re.split(r"[\r\n]", output) if line.strip("\b ")]


def test_unreadable_files_are_skipped_listed_and_reported_after_the_rest(model_file, tmp_path):
    folder = tmp_path / "photos"
    sizes = _copy_photos(folder)
    damaged = _write_damaged(folder)
    out = tmp_path / "out"

    code, output = _run(["predict", "--model", model_file, "--images", folder, "--output-dir", out,
                         "--score-threshold", "0.0"])

    assert code == 2, output
    assert "Traceback" not in output
    # Every readable photo was processed, including those after the bad files.
    written = json.loads((out / "detections.json").read_text())
    assert isinstance(written, list)  # the format readers know: a list, one entry per image
    assert [os.path.basename(e["image"]) for e in written] == sorted(list(sizes) + list(damaged))
    read = [e for e in written if "error" not in e]
    assert sorted(os.path.basename(e["image"]) for e in read) == sorted(sizes)
    for entry in read:  # unchanged per-image entries
        assert set(entry) == ENTRY_KEYS
        assert (entry["width"], entry["height"]) == sizes[os.path.basename(entry["image"])]
        assert os.path.isfile(entry["output"])
        assert len(entry["boxes"]) == len(entry["scores"]) == len(entry["class_names"]) > 0
    failed = {os.path.basename(e["image"]): e for e in written if "error" in e}
    assert {name: e["error"] for name, e in failed.items()} == damaged
    for name, entry in failed.items():
        assert set(entry) == {"image", "error"} and entry["image"] == str(folder / name)
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{os.path.splitext(n)[0]}.png" for n in sizes)

    lines = _lines(output)
    # Messages start their own line (not glued to the progress bar) ...
    for line in lines:
        if "rcnn-zoo:" in line:
            assert line.startswith("rcnn-zoo: "), f"glued to another line: {line!r}"
    summary = next(i for i, line in enumerate(lines) if "detection(s)" in line)
    assert f"in 3 of {len(sizes) + len(damaged)} image(s)" in lines[summary]
    # ... after the summary: one warning per kind naming its files, then the error.
    warnings = [line for line in lines[summary + 1:] if line.startswith("rcnn-zoo: warning: ")]
    assert len(warnings) == 3
    for reason in set(damaged.values()):
        names = [n for n, r in damaged.items() if r == reason]
        line = next(w for w in warnings if f"({reason})" in w)
        assert f"skipped {len(names)} file" in line
        for name in names:
            assert str(folder / name) in line
    assert lines[-1].startswith("rcnn-zoo: error: 5 of 8 image files could not be read")
    assert str(out / "detections.json") in lines[-1]


def test_every_file_unreadable_still_writes_detections_json(tmp_path):
    if not os.path.isfile(os.path.join(REPO, "weights", "shapes_tiny.weights.h5")):
        pytest.skip("weights/shapes_tiny.weights.h5 is not in this checkout")
    folder = tmp_path / "bad"
    folder.mkdir()
    for i in range(5):
        (folder / f"scan{i}.jpg").write_text(f"page {i}\n")
    (folder / "zero.png").write_bytes(b"")
    out = tmp_path / "out"

    code, output = _run(["predict", "--weights", "shapes", "--images", folder, "--output-dir", out,
                         "--verbose", "0"])

    assert code == 2, output
    assert "Traceback" not in output
    written = json.loads((out / "detections.json").read_text())
    assert [e["error"] for e in written] == [NOT_AN_IMAGE] * 5 + [EMPTY_FILE]
    assert not list(out.glob("*.png"))
    lines = _lines(output)
    assert lines[0].startswith("0 detection(s)") and "in 0 of 6 image(s)" in lines[0]
    many = next(line for line in lines if f"({NOT_AN_IMAGE})" in line)
    assert many.startswith("rcnn-zoo: warning: skipped 5 files")
    assert many.endswith(f"{folder / 'scan0.jpg'}, {folder / 'scan1.jpg'}, {folder / 'scan2.jpg'} and 2 more")
    assert any(line.startswith(f"rcnn-zoo: warning: skipped 1 file ({EMPTY_FILE}): {folder / 'zero.png'}")
               for line in lines)
    assert lines[-1].startswith("rcnn-zoo: error: 6 of 6 image files could not be read")


def test_predict_images_returns_the_read_ones_and_the_failed_ones(model_file, tmp_path):
    folder = tmp_path / "photos"
    sizes = _copy_photos(folder)
    damaged = _write_damaged(folder)
    paths = sorted(str(p) for p in folder.iterdir())
    model = rcnn_zoo.inference.load_model(model_file)

    with pytest.warns(UnreadableImageWarning, match=r"5 of 8 image files could not be read.*p2_truncated\.jpg"):
        results = predict_images(model, paths, tmp_path / "out", score_threshold=0.0, verbose=0)

    assert isinstance(results, list)  # as before: the entries of the images read
    assert sorted(os.path.basename(r["image"]) for r in results) == sorted(sizes)
    assert all(set(r) == ENTRY_KEYS for r in results)
    assert {os.path.basename(f["image"]): f["error"] for f in results.failed} == damaged


@pytest.mark.parametrize("damage, message", [
    ("truncated", "the file is damaged or truncated (not a valid zip archive, which .keras files are)"),
    ("empty", "the file is empty (0 bytes)"),
])
def test_a_damaged_model_file_is_one_line_naming_it(damage, message, model_file, tmp_path, capsys):
    folder = tmp_path / "photos"
    _copy_photos(folder)
    data = model_file.read_bytes()
    damaged = tmp_path / "best.keras"
    damaged.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")

    code = cli.main(["predict", "--model", str(damaged), "--images", str(folder),
                     "--output-dir", str(tmp_path / "out")])

    assert code == 2
    err = capsys.readouterr().err
    assert err == f"rcnn-zoo: error: cannot read model file {damaged}: {message}; download or save it again\n"
