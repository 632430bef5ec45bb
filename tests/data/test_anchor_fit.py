"""Anchors fitted to the data (``--anchor-sizes auto``, ``--aspect-ratios auto``): the search's
nearest-cell shortcut equals the IoU over every anchor of the grid, the fit raises the recall
the whole-grid analysis measures, and it keeps the anchor count and whatever was given."""

import os

import numpy as np
import pytest

from photo_copies import RACCOON
from rcnn_zoo.data import DetectionDataset, DetectionRecord, analyze, load_dataset
from rcnn_zoo.data.anchor_fit import AnchorGrid, fit_anchors
from rcnn_zoo.training.detectors import build_detector, build_fitted_detector


@pytest.fixture(scope="module")
def raccoon_test():
    return load_dataset(RACCOON, "voc", "test", check_images="header")


@pytest.mark.parametrize("backbone", ["tiny", "resnet50_fpn", "vgg16"])
def test_nearest_cell_iou_equals_the_whole_grid(raccoon_test, backbone):
    """tiny: one level, torchvision anchors; resnet50_fpn: five levels, P6 spaced by
    image // grid; vgg16: py-faster-rcnn anchors (centred at (stride − 1) / 2)."""
    model = build_detector(1, raccoon_test.class_names, backbone=backbone)
    whole_grid = analyze(raccoon_test, model, duplicates=False)["anchors"]["_best_iou"]
    shortcut = AnchorGrid(raccoon_test, model).best_iou(model.rpn.anchor_generator)
    assert len(shortcut) == len(whole_grid) > 30
    np.testing.assert_allclose(shortcut, whole_grid, atol=1e-6)


def test_fit_raises_the_whole_grid_recall_and_keeps_the_anchor_count(raccoon_test):
    model, fit = build_fitted_detector(raccoon_test, "tiny", anchor_sizes="auto", aspect_ratios="auto")
    default = build_detector(1, raccoon_test.class_names, backbone="tiny")
    before = analyze(raccoon_test, default, duplicates=False)["anchors"]["overall"]
    after = analyze(raccoon_test, model, duplicates=False)["anchors"]["overall"]
    # What the fit reports is what the whole-grid analysis of the fitted model measures.
    assert fit["before"]["recall@0.7"] == pytest.approx(before["recall@0.7"], abs=1e-4)
    assert fit["after"]["recall@0.7"] == pytest.approx(after["recall@0.7"], abs=1e-4)
    assert after["recall@0.7"] + after["recall@0.5"] > before["recall@0.7"] + before["recall@0.5"]
    assert after["recall@0.7"] > 0.9 > before["recall@0.7"]
    generator = model.rpn.anchor_generator
    assert generator.num_anchors_per_location == default.rpn.anchor_generator.num_anchors_per_location
    sizes = list(fit["sizes"][0])
    assert sizes == sorted(sizes) and len(sizes) == 4


def test_given_ratios_stay_when_only_the_sizes_are_fitted(raccoon_test):
    model, fit = build_fitted_detector(raccoon_test, "resnet50_fpn", anchor_sizes="auto", aspect_ratios=[0.5, 1, 2])
    generator = model.rpn.anchor_generator
    assert tuple(generator.aspect_ratios) == (0.5, 1.0, 2.0) and fit["aspect_ratios"] == (0.5, 1.0, 2.0)
    sizes = [level[0] for level in generator.sizes]
    assert len(sizes) == 5 and sizes == sorted(sizes)  # one size per FPN level, rising with the level
    assert fit["after"]["recall@0.7"] > fit["before"]["recall@0.7"]


def test_small_objects_get_small_anchors(tmp_path):
    """12 px squares: the tiny model's anchors (32–256 px) reach none of them at IoU 0.5. Fitted,
    every size moves under 2× the objects; the recall stays bounded by the stride (8 px: a box
    centre up to 4 px from the nearest cell on each axis), 0.68 at 0.5 here."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(6):
        corners = rng.uniform(8, 230, (20, 2)).astype(np.float32)
        boxes = np.concatenate([corners, corners + 12], axis=1)
        records.append(DetectionRecord(os.path.join(tmp_path, f"{i}.jpg"), i, boxes, np.zeros(20, np.int32),
                                       np.zeros(20, bool), 256, 256))
    dataset = DetectionDataset(records, ["dot"])
    model = build_detector(1, ["dot"], backbone="tiny")
    fit = fit_anchors(dataset, model)
    assert fit["before"]["recall@0.5"] == 0.0
    assert fit["after"]["recall@0.5"] > 0.6
    assert max(fit["sizes"][0]) < 24
