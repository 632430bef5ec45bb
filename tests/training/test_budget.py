"""``--time-budget``: the recipe chosen for the data (image size from the object sizes,
augmentation, batch size and epochs from measured step times), explicit options winning, and
the run ending inside the budget with its learning-rate curve and progress moved with it.

Expected values are worked out by hand from the rules in ``rcnn_zoo/training/budget.py``'s
docstring (the arithmetic is in the comments), or read from the raccoon XML files."""

import dataclasses
import json
import math
import os
import time
import xml.etree.ElementTree as ET

import keras
import numpy as np
import pytest

from photo_copies import RACCOON, copy_raccoon_photos
from rcnn_zoo.data import DetectionDataset, DetectionRecord, load_dataset
from rcnn_zoo.errors import UsageError
from rcnn_zoo.training import TrainConfig, train
from rcnn_zoo.training.budget import (
    TimeBudget,
    choose_augmentation,
    choose_backbone,
    choose_data_recipe,
    choose_image_sizes,
    HEADROOM,
    RECIPE_FIELDS,
    given_fields,
    parse_duration,
    Workload,
    plan_schedule,
)
from rcnn_zoo.training.config import check_config
from rcnn_zoo.training.recipe import _chosen_before
from rcnn_zoo.training.detectors import build_detector


def _squares(tmp_path, image_size, side, count=4, per_image=10):
    """``count`` images of ``image_size`` (h, w) holding ``per_image`` squares of ``side`` px."""
    height, width = image_size
    rng = np.random.default_rng(0)
    records = []
    for i in range(count):
        corners = rng.uniform(0, min(height, width) - side, (per_image, 2)).astype(np.float32)
        boxes = np.concatenate([corners, corners + side], axis=1)
        records.append(DetectionRecord(os.path.join(tmp_path, f"{i}.jpg"), i, boxes, np.zeros(per_image, np.int32),
                                       np.zeros(per_image, bool), height, width))
    return DetectionDataset(records, ["square"])


# ----------------------------------------------------------------------------- durations


@pytest.mark.parametrize("text, seconds", [("20m", 1200), ("90s", 90), ("1.5h", 5400), ("1h30m", 5400),
                                           ("2m 30s", 150)])
def test_durations_read_with_their_units(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["20", "twenty minutes", "0m", "-5m", "5 m x"])
def test_a_duration_without_a_unit_or_not_positive_is_refused(text):
    with pytest.raises(UsageError, match="--time-budget"):
        parse_duration(text)


def test_a_budget_with_several_workers_is_refused():
    with pytest.raises(UsageError, match="--time-budget is not supported with --distribute"):
        check_config(TrainConfig(time_budget="20m", distribute="multi-worker"))


def test_given_fields_are_the_named_and_the_changed():
    config = TrainConfig(batch_size=4, epochs=30, given=["batch_size"])
    assert {"batch_size", "epochs"} <= given_fields(config)  # 4 is the default, but it was typed
    assert "image_min_size" not in given_fields(config)


# ------------------------------------------------------------------------------ image size


def test_small_objects_keep_the_photos_resolution(tmp_path):
    """640×480 photos, 12 px objects: at the default 256/416 they are 12·256/480 = 6.4 px, under
    the 32 px anchor; reaching it needs 256·32/6.4 = 1280 px, capped at the photos' 480 px
    shorter side; the longer side keeps its 640 px (≥ round(480·416/256) = 780 would too)."""
    dataset = _squares(tmp_path, (480, 640), 12)
    min_size, max_size, choice = choose_image_sizes(dataset, 256, 416, 32)
    assert (min_size, max_size) == (480, 780)
    assert "median shorter side 480" in choice["reason"] and choice["small_objects_px"] == pytest.approx(6.4, abs=0.1)
    # 960×540 video frames: round(540·416/256) = 878 would shrink them; their 960 px stay.
    assert choose_image_sizes(_squares(tmp_path, (540, 960), 12), 256, 416, 32)[:2] == (540, 960)


def test_the_size_grows_only_as_far_as_the_objects_need(tmp_path):
    """1000×750 photos, 60 px objects: 60·256/750 = 20.5 px at 256; 256·32/20.5 = 400 → 416 (the
    next multiple of 32), where they are 60·416/750 = 33.3 px ≥ 32; longer side round(416·1.625)."""
    dataset = _squares(tmp_path, (750, 1000), 60)
    assert choose_image_sizes(dataset, 256, 416, 32)[:2] == (416, 676)


def test_the_size_is_capped_for_huge_photos_and_kept_for_large_objects(tmp_path):
    huge = _squares(tmp_path, (3000, 4000), 20)  # 1.7 px at 256: would need 4800 px
    min_size, max_size, choice = choose_image_sizes(huge, 256, 416, 32)
    assert (min_size, max_size) == (800, 1300) and "capped at 800 px" in choice["reason"]
    degenerate = _squares(tmp_path, (480, 640), 0)  # zero-area boxes (the readers drop them; records may not)
    assert choose_image_sizes(degenerate, 256, 416, 32)[:2] == (480, 780)
    large = _squares(tmp_path, (480, 640), 200)
    assert choose_image_sizes(large, 256, 416, 32)[:2] == (256, 416)


def _raccoon_sizes(stems, min_size, max_size):
    """√(w·h) of every raccoon box of ``stems`` after the resize, read from the XML files."""
    sizes = []
    for stem in stems:
        root = ET.parse(os.path.join(RACCOON, "annotations", f"{stem}.xml")).getroot()
        width, height = (int(root.find(f"size/{k}").text) for k in ("width", "height"))
        scale = min(min_size / min(width, height), max_size / max(width, height))
        for box in root.iter("bndbox"):
            x1, y1, x2, y2 = (float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
            sizes.append(np.sqrt((x2 - x1 + 1) * (y2 - y1 + 1)) * scale)  # VOC: inclusive pixel indices
    return np.array(sizes)


@pytest.mark.parametrize("backbone, sizes", [("tiny", (256, 416)), ("resnet50_fpn", (800, 1333))])
def test_raccoon_photos_keep_the_default_size_and_get_the_readme_augmentation(backbone, sizes):
    """The real photos, the CLI's tiny model and the registered weights' ResNet-50-FPN: the
    raccoons are large (the smallest tenth ≥ 100 px at 256 px, from the XMLs), so the default
    size stays and zoom-out 1.5 keeps them above the 32 px anchor."""
    with open(os.path.join(RACCOON, "train.txt")) as handle:
        stems = handle.read().split()
    small = np.percentile(_raccoon_sizes(stems, *sizes), 10)
    assert small / 1.5 > 32
    train_set = load_dataset(RACCOON, "voc", "train", check_images="header")
    model = build_detector(1, train_set.class_names, backbone=backbone)
    config, choices = choose_data_recipe(TrainConfig(time_budget="20m", backbone=backbone), train_set, model)
    assert (config.image_min_size, config.image_max_size) == sizes
    assert (config.jitter, config.random_crop, config.zoom_out) == (True, 0.5, 1.5)
    named = {c["choice"]: c for c in choices}
    # tiny may be swapped for tiny_fpn (the recipe says why); a backbone given is never.
    assert set(named) == {"image size", "jitter", "random crop", "zoom out"} | ({"backbone"} if backbone == "tiny" else set())
    assert f"{small:.0f} px" in named["image size"]["reason"]
    assert config.backbone == backbone  # the median raccoon is far above 112 px at 256/416


def test_the_fpn_backbone_is_chosen_for_small_objects_only(tmp_path):
    """Faster R-CNN on tiny gets tiny_fpn when the median object is under 112 px after the
    resize (FPN eq. 1: floor(4 + log2(111 / 224)) = 2, the stride-4 level). Squares of 60 px in
    480×640 photos resized to 256/416: 60 · 256/480 = 32 px → tiny_fpn; squares of 220 px → 117 px,
    tiny stays. A given backbone and the other detectors are left alone."""
    small, large = _squares(tmp_path, (480, 640), 60), _squares(tmp_path, (480, 640), 220, per_image=1)
    fields, (choice,) = choose_backbone(small, "faster_rcnn", "tiny", 256, 416, given=set())
    assert fields == {"backbone": "tiny_fpn"} and choice["median_object_px"] == 32.0
    assert choose_backbone(large, "faster_rcnn", "tiny", 256, 416, set())[0] == {}
    assert "117 px" in choose_backbone(large, "faster_rcnn", "tiny", 256, 416, set())[1][0]["reason"]
    assert choose_backbone(small, "faster_rcnn", "tiny", 256, 416, {"backbone"}) == ({}, [])
    for detector in ("rfcn", "fast_rcnn", "rcnn"):
        assert choose_backbone(small, detector, "tiny", 256, 416, set()) == ({}, [])
    assert choose_backbone(small, "faster_rcnn", "resnet50_fpn", 256, 416, set()) == ({}, [])
    model = build_detector(1, ["square"], backbone="tiny")
    config, _ = choose_data_recipe(TrainConfig(time_budget="5m"), small, model)
    assert config.backbone == "tiny_fpn"
    # Fine-tuning weights (--model-arg weights=…) keeps the backbone they were trained with.
    config, _ = choose_data_recipe(TrainConfig(time_budget="5m", model_args=["weights=shapes"]), small, model)
    assert config.backbone == "tiny"


def test_small_objects_are_not_zoomed_out_and_detectors_keep_their_limits(tmp_path):
    dataset = _squares(tmp_path, (480, 640), 40)  # 40 px at 480: 40 / 1.5 = 26.7 < 32
    fields, _ = choose_augmentation(dataset, "faster_rcnn", 480, 780, 32, given=set())
    assert fields == {"jitter": True, "random_crop": 0.5, "zoom_out": 1.0}
    # Fast R-CNN's proposals are computed once per original image: no crop, no zoom.
    assert choose_augmentation(dataset, "fast_rcnn", 480, 780, 32, set())[0] == {"jitter": True}
    assert choose_augmentation(dataset, "rcnn", 480, 780, 32, set())[0] == {}
    assert choose_augmentation(dataset, "rfcn", 480, 780, 32, {"jitter", "zoom_out"})[0] == {"random_crop": 0.5}


def test_given_image_sizes_and_augmentation_stay(tmp_path):
    dataset = _squares(tmp_path, (480, 640), 12)
    model = build_detector(1, ["square"], backbone="tiny")
    given = TrainConfig(time_budget="5m", image_min_size=256, random_crop=0.0, backbone="tiny",
                        given=["random_crop", "backbone"])
    config, choices = choose_data_recipe(given, dataset, model)
    assert (config.image_min_size, config.image_max_size, config.random_crop) == (256, None, 0.0)
    assert config.backbone == "tiny"  # typed: kept, though the 12-px squares would get tiny_fpn
    assert [c["choice"] for c in choices] == ["jitter", "zoom out"]


# -------------------------------------------------------------------------------- schedule


def _workload(per_image, num_images, val_images=0, **kwargs):
    """A :class:`Workload` whose steps take ``per_image[batch] · batch`` seconds."""
    return Workload(measure=lambda batch: per_image[batch] * batch, steps=lambda batch: -(-num_images // batch),
                    images=num_images, val_images=val_images, **kwargs)


def test_epochs_and_validation_fill_the_budget():
    """100 images, 20 validation images, batch 4 at 0.031 s per image (8 is 3 % faster: 4 stays).
    Left: 1000 s − 3 % = 970 s. An epoch: 25 steps · 4 · 0.031 = 3.1 s; a validation 0.5 · 0.031
    · 20 = 0.31 s. Validating every epoch 970 / 3.41 = 284 epochs → every round(284/10) = 28;
    then 970 / (3.1 + 0.31 / 28) = 311 epochs. Warm-up: 2 % of 311 · 25 steps = 155.5 steps =
    6.22 epochs."""
    workload = _workload({2: 0.05, 4: 0.031, 8: 0.030}, 100, val_images=20)
    config, choices, deadline = plan_schedule(TrainConfig(time_budget="1000s"), workload, time.time(), 1000.0)
    assert (config.batch_size, config.val_every, config.epochs) == (4, 28, 311)
    assert config.warmup_epochs == pytest.approx(6.22, abs=0.01)
    assert deadline == pytest.approx(970.0, abs=0.5)
    named = {c["choice"]: c for c in choices}
    assert named["batch size"]["images_per_second"] == {"2": 20.0, "4": 32.26, "8": 33.33}


def test_the_fastest_batch_wins_and_given_values_stay():
    workload = _workload({2: 0.05, 4: 0.04, 8: 0.03}, 100)
    config, _, _ = plan_schedule(TrainConfig(time_budget="1000s"), workload, time.time(), 1000.0)
    assert config.batch_size == 8  # 25 % faster than 4
    given = TrainConfig(time_budget="1000s", batch_size=2, epochs=7, warmup_epochs=1.0, given=["warmup_epochs"])
    config, choices, _ = plan_schedule(given, workload, time.time(), 1000.0)
    assert (config.batch_size, config.epochs, config.warmup_epochs) == (2, 7, 1.0)
    assert choices == []  # nothing was chosen: everything the schedule sets was given


def test_expensive_candidates_are_not_measured_and_a_share_leaves_time_for_later_stages():
    """2 s per image: measuring batch 4 (8 steps · 4 · 2 s = 64 s) would cost more than 2 % of a
    600 s budget, so only batch 2 is measured. R-CNN's share 0.5 of 600 − 18 = 582 s → 291 s;
    an epoch of 50 steps · 2 · 2 s = 200 s → 1 epoch."""
    measured = []
    workload = _workload({2: 2.0, 4: 2.0}, 100, share=0.5)
    workload.measure = lambda batch: measured.append(batch) or 2.0 * batch
    config, choices, deadline = plan_schedule(TrainConfig(time_budget="10m"), workload, time.time(), 600.0)
    assert measured == [2] and config.batch_size == 2 and config.epochs == 1
    assert deadline == pytest.approx(291.0, abs=0.5)
    fixed = _workload({4: 0.01}, 100, choose_batch=False)
    config, choices, _ = plan_schedule(TrainConfig(time_budget="10m"), fixed, time.time(), 600.0)
    assert config.batch_size == 4 and "batch size" not in [c["choice"] for c in choices]
    few = _workload({2: 0.05, 4: 0.04}, 5)  # batch 8 is larger than the 5 images: not measured
    assert plan_schedule(TrainConfig(time_budget="10m"), few, time.time(), 600.0)[0].batch_size == 4


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class _Model:
    stop_training = False


def _timed_epochs(callback, clock, seconds):
    """Run ``callback`` over epochs of ``seconds`` each (a list) from t = 0; the epochs done."""
    clock.now = 0.0
    callback.set_model(_Model())
    callback.on_train_begin()
    for epoch, duration in enumerate(seconds):
        clock.now += duration
        callback.on_epoch_end(epoch)
        if callback.model.stop_training:
            return epoch + 1
    return len(seconds)


class _Curve:
    epochs = 10.0


def test_slow_epochs_move_the_end_of_the_run_and_its_curves():
    """Budget 100 s from t = 0, 10 epochs planned; epochs take 20 s: after the first, 1 +
    int(80 / 20) = 5 epochs fit; the schedule and the progress file follow, and the run stops
    after epoch 5 (at t = 100)."""
    clock, schedule, progress = _Clock(), _Curve(), _Curve()
    callback = TimeBudget(0.0, 100.0, 10, schedule=schedule, progress=progress, verbose=0, clock=clock)
    assert _timed_epochs(callback, clock, [20.0] * 10) == 5
    assert (callback.epochs, schedule.epochs, progress.epochs) == (5, 5.0, 5)
    assert callback.replans[0] == {"after_epoch": 1, "epochs": 5, "epoch_seconds": 20.0}


def test_fast_epochs_move_the_end_later_only_in_the_first_half_and_up_to_the_limit():
    """4 epochs planned, limit 6, budget 100 s, 10 s epochs: after the first, 1 + int(90 / 10) =
    10 fit; the end moves to the limit, 6. Planned 10 (limit 15), six epochs of 9.5 s (after the
    sixth, 6 + int(43 / 9.5) = 10 fit: no move), then 1 s epochs: after the seventh, 7 +
    int(42 / (58 / 7)) = 12 fit, but the run is past its half: it still ends after epoch 10."""
    clock, schedule = _Clock(), _Curve()
    callback = TimeBudget(0.0, 100.0, 4, limit=6, schedule=schedule, verbose=0, clock=clock)
    assert _timed_epochs(callback, clock, [10.0] * 10) == 6 and schedule.epochs == 6.0
    late = TimeBudget(0.0, 100.0, 10, limit=15, verbose=0, clock=clock)
    assert _timed_epochs(late, clock, [9.5] * 6 + [1.0] * 10) == 10 and not late.replans
    fixed = TimeBudget(0.0, 100.0, 3, verbose=0, clock=clock)
    assert _timed_epochs(fixed, clock, [1.0] * 5) == 3 and not fixed.replans  # no limit: never more


# ------------------------------------------------------------------------ the command itself

STEMS = ("raccoon-1", "raccoon-10", "raccoon-100", "raccoon-105", "raccoon-106", "raccoon-107")
# Each detector's run: the options given besides the data (R-CNN: small warps, few proposals).
GIVEN = {
    "faster_rcnn": [],
    "rfcn": ["--batch-size", "2"],
    "fast_rcnn": [],
    "rcnn": ["--model-arg", "warp_size=32", "--model-arg", "context_padding=4", "--model-arg", "max_proposals=100"],
}
BUDGET_SECONDS = 30


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return copy_raccoon_photos(str(tmp_path_factory.mktemp("raccoon") / "voc"), STEMS, long_side=128)


def _train(*argv):
    """``rcnn-zoo train ARGV`` in this process; its printed output."""
    import contextlib
    import io

    from rcnn_zoo import cli

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = cli.main(["train", *map(str, argv)])
    assert code == 0, stdout.getvalue()[-3000:]
    return stdout.getvalue()


@pytest.mark.parametrize("detector", list(GIVEN))
def test_every_detector_trains_within_the_budget_as_a_finished_run(detector, photos, tmp_path):
    """``rcnn-zoo train --data DIR --detector NAME --time-budget 30s`` on six real photos: the
    recipe is printed and stored with its reasons, the options given stay, and the run ends as
    a finished run inside the budget (plus at most one epoch, the last one started in time)."""
    out = tmp_path / "run"
    stdout = _train("--data", photos, "--detector", detector, "--time-budget", f"{BUDGET_SECONDS}s",
                    *GIVEN[detector], "--output-dir", out, "--verbose", 0)
    with open(out / "config.json") as handle:
        record = json.load(handle)
    named = {c["choice"]: c for c in record["choices"]}
    expected = {"epochs", "warm-up epochs"} | {
        "faster_rcnn": {"image size", "jitter", "random crop", "zoom out", "batch size"},
        "rfcn": {"image size", "jitter", "random crop", "zoom out"},
        "fast_rcnn": {"image size", "jitter", "batch size"},
        "rcnn": set(),
    }[detector]
    assert expected <= set(named) and not {"batch size"} & set(named) - expected
    for choice in record["choices"]:
        assert choice["reason"]
        if choice["choice"] != "epochs re-planned":  # written at the end, into config.json only
            assert f"  {choice['choice']}: {choice['value']} — {choice['reason']}" in stdout
    arguments = record["arguments"]
    if detector == "rfcn":
        assert arguments["batch_size"] == 2 and "batch_size" in arguments["given"]
    if detector == "rcnn":
        assert "50% of" in named["epochs"]["reason"]  # the SVM and regressor stages get the rest
    else:
        assert arguments["image_min_size"] == 256 and arguments["jitter"] is True
    with open(out / "history.csv") as handle:
        rows = handle.read().splitlines()[1:]
    # config.json says how many epochs the run ended with: as many as history.csv holds, and the
    # backup of an unfinished run is gone (the same command again has nothing to do).
    assert arguments["epochs"] == record["epochs_done"] == len(rows) >= 1
    assert not os.path.exists(out / "backup")
    used = record["time_budget"]
    assert used["seconds"] == BUDGET_SECONDS and used["epochs_end_by_seconds"] <= BUDGET_SECONDS
    # The end moved (the timing itself is tested with a fake clock above), but never past the limit.
    assert 1 <= arguments["epochs"] <= math.ceil(HEADROOM * named["epochs"]["value"])
    assert "nothing to do" in _train("--output-dir", out, "--resume")


class _Stop(Exception):
    """Raised by :class:`_StopAt` in place of a kill."""


class _StopAt(keras.callbacks.Callback):
    """Stops a run as a kill would: after epoch ``epoch`` ends (None: when training begins),
    keeping what the run was given (its epochs, its model's image sizes)."""

    def __init__(self, epoch=None):
        super().__init__()
        self.epoch, self.seen = epoch, {}

    def on_train_begin(self, logs=None):
        self.seen = {"epochs": self.params["epochs"], "sizes": (self.model.image_min_size, self.model.image_max_size)}
        if self.epoch is None:
            raise _Stop

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise _Stop


def test_an_interrupted_budget_run_continues_on_the_values_its_recipe_chose(photos, tmp_path):
    """The same ``--time-budget`` command again, after the run stopped in its second epoch,
    resumes that run: the image size, batch size and epochs its recipe chose (config.json, the
    end as moved in the first epochs), not the defaults nor a new plan."""
    config = TrainConfig(data=photos, output_dir=str(tmp_path / "run"), time_budget="20s", verbose=0,
                         given=["data", "output_dir", "time_budget", "verbose"])
    first = _StopAt(epoch=1)
    with pytest.raises(_Stop):
        train(config, callbacks=[first])
    with open(tmp_path / "run" / "config.json") as handle:
        chosen = json.load(handle)["arguments"]
    again = _StopAt()
    with pytest.raises(_Stop):
        train(config, callbacks=[again])
    assert again.seen["sizes"] == first.seen["sizes"] == (chosen["image_min_size"], chosen["image_max_size"])
    assert again.seen["epochs"] == chosen["epochs"]
    assert os.path.exists(tmp_path / "run" / "backup")
    resumed = _chosen_before(config)
    assert {f: getattr(resumed, f) for f in RECIPE_FIELDS} == {f: chosen[f] for f in RECIPE_FIELDS}
    # The chosen sizes are written out (the defaults are None), so the check above can fail.
    assert (chosen["image_min_size"], TrainConfig().image_min_size) == (256, None)
    # What the user gives still wins over the earlier choice.
    given = dataclasses.replace(config, batch_size=3, given=[*config.given, "batch_size"])
    assert _chosen_before(given).batch_size == 3 != chosen["batch_size"]
