"""R-CNN's candidate regions of a training set and the targets read from their overlaps
(Girshick et al. 2014, section 2.3 and appendix C).

Every ground-truth box and every proposal of every image is a region; its overlaps with the
ground truth decide what it trains: the fine-tuning softmax (IoU ≥ 0.5 is the box's class), the
SVMs (:mod:`rcnn_zoo.targets.svm_targets`) and the box regressors (IoU ≥ 0.6).

Unlike the rest of :mod:`rcnn_zoo.targets`, these are NumPy arrays over a whole training set,
held in memory: R-CNN trains its stages on regions of many images at once, not per batch.
Shapes: ``N`` images, ``K`` regions over all images, ``C`` foreground classes. Boxes are
float32 xyxy pixels.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from rcnn_zoo.ops import boxes as box_ops


@dataclasses.dataclass
class RegionSet:
    """The candidate regions of a training set: every ground-truth box and every proposal.

    Attributes:
        images: ``[N, H, W, 3]`` raw pixels, zero-padded bottom/right to a common size.
        image_sizes: ``[N, 2]`` int32 (height, width) of each image.
        boxes: ``[K, 4]`` float32 xyxy pixels.
        image_index: ``[K]`` int32, the image of each region.
        gt_label: ``[K]`` int32, the class of a ground-truth box, ``-1`` for proposals.
        max_iou: ``[K]`` float32 IoU with the most overlapping ground-truth box of the image.
        matched_label: ``[K]`` int32 class of that box (``-1`` if the image has none).
        matched_box: ``[K, 4]`` float32 that box (zeros if none).
        class_iou: ``[K, C]`` float32 largest IoU with a ground-truth box of each class.
    """

    images: np.ndarray
    image_sizes: np.ndarray
    boxes: np.ndarray
    image_index: np.ndarray
    gt_label: np.ndarray
    max_iou: np.ndarray
    matched_label: np.ndarray
    matched_box: np.ndarray
    class_iou: np.ndarray

    def __len__(self):
        return len(self.boxes)

    @property
    def num_classes(self):
        return self.class_iou.shape[1]


def _pad_images(images):
    """List of ``[H_i, W_i, 3]`` → ``([N, H, W, 3]`` zero-padded bottom/right, ``[N, 2]`` sizes)."""
    height = max(image.shape[0] for image in images)
    width = max(image.shape[1] for image in images)
    dtype = np.uint8 if all(image.dtype == np.uint8 for image in images) else np.float32
    padded = np.zeros((len(images), height, width, 3), dtype)
    sizes = np.zeros((len(images), 2), np.int32)
    for n, image in enumerate(images):
        padded[n, : image.shape[0], : image.shape[1]] = image
        sizes[n] = image.shape[:2]
    return padded, sizes


def _image_regions(gt, labels, proposals, num_classes):
    """One image's regions (its ground truth first, then its proposals) and their overlaps: a
    dict of the per-region columns of :class:`RegionSet`."""
    candidates = np.concatenate([gt, proposals], axis=0)
    iou = box_ops.pairwise_iou(tf.constant(candidates), tf.constant(gt)).numpy()  # [M, G]
    class_iou = np.zeros((len(candidates), num_classes), np.float32)
    for c in range(num_classes):
        if np.any(labels == c):
            class_iou[:, c] = iou[:, labels == c].max(axis=1)
    if len(gt):
        best = iou.argmax(axis=1)
        matched = {"max_iou": iou.max(axis=1), "matched_label": labels[best], "matched_box": gt[best]}
    else:
        matched = {"max_iou": np.zeros(len(candidates), np.float32),
                   "matched_label": np.full(len(candidates), -1, np.int32),
                   "matched_box": np.zeros((len(candidates), 4), np.float32)}
    return dict(matched, boxes=candidates, class_iou=class_iou,
                gt_label=np.concatenate([labels, np.full(len(proposals), -1, np.int32)]))


def build_region_set(images, gt_boxes, gt_labels, proposals, num_classes):
    """Candidate regions and their overlaps (see :class:`RegionSet`).

    Args:
        images: list of ``N`` ``[H_i, W_i, 3]`` arrays, or an ``[N, H, W, 3]`` array.
        gt_boxes: per image ``[G_i, 4]`` xyxy pixels (or a padded ``[N, G, 4]`` array).
        gt_labels: per image ``[G_i]`` classes ``0 … C−1``; ``-1`` marks padding.
        proposals: per image ``[R_i, 4]`` xyxy pixels (boxes without area are dropped).
        num_classes: ``C``.
    """
    images = [np.asarray(image) for image in images]
    if not len(images) == len(gt_boxes) == len(gt_labels) == len(proposals):
        raise ValueError(
            f"got {len(images)} images, {len(gt_boxes)} box sets, {len(gt_labels)} label sets "
            f"and {len(proposals)} proposal sets"
        )
    padded, sizes = _pad_images(images)
    per_image = []
    for n in range(len(images)):
        labels = np.asarray(gt_labels[n], np.int64).reshape(-1)
        gt = np.asarray(gt_boxes[n], np.float32).reshape(-1, 4)[labels >= 0]
        labels = labels[labels >= 0].astype(np.int32)
        if np.any(labels >= num_classes):
            raise ValueError(f"image {n} has labels ≥ num_classes ({num_classes})")
        props = np.asarray(proposals[n], np.float32).reshape(-1, 4)
        props = props[(props[:, 2] > props[:, 0]) & (props[:, 3] > props[:, 1])]
        regions = _image_regions(gt, labels, props, num_classes)
        regions["image_index"] = np.full(len(regions["boxes"]), n, np.int32)
        per_image.append(regions)
    columns = {key: np.concatenate([regions[key] for regions in per_image], axis=0)
               for key in per_image[0]}
    return RegionSet(images=padded, image_sizes=sizes, **columns)


def fine_tune_labels(regions, foreground_iou=0.5):
    """Section 2.3's fine-tuning labels: regions with IoU ≥ ``foreground_iou`` with a
    ground-truth box (the boxes themselves included) are that box's class, the rest background.

    Returns:
        ``(foreground [n_fg] int, background [n_bg] int, head_labels [K] int32)``: indices into
        ``regions`` and the softmax's label of every region, ``0`` = background, ``c + 1`` =
        class ``c``.
    """
    foreground = np.flatnonzero((regions.max_iou >= foreground_iou) & (regions.matched_label >= 0))
    background = np.setdiff1d(np.arange(len(regions)), foreground)
    head_labels = np.zeros(len(regions), np.int32)
    head_labels[foreground] = regions.matched_label[foreground] + 1
    return foreground, background, head_labels


def box_regression_targets(regions, min_iou=0.6, box_weights=(1.0, 1.0, 1.0, 1.0)):
    """Training pairs of the box regressors (appendix C).

    A region ``P`` pairs with the ground-truth box ``G`` it overlaps most, if that IoU is at
    least ``min_iou`` (ground-truth boxes pair with themselves). The target is
    ``t = (wx·(Gx − Px)/Pw, wy·(Gy − Py)/Ph, ww·log(Gw/Pw), wh·log(Gh/Ph))`` (centres and sizes),
    for the regressor of ``G``'s class.

    Returns:
        ``(indices [n] int, targets [n, 4] float32, classes [n] int32)``.
    """
    indices = np.flatnonzero((regions.max_iou >= min_iou) & (regions.matched_label >= 0))
    targets = box_ops.encode(
        tf.constant(regions.matched_box[indices], tf.float32),
        tf.constant(regions.boxes[indices], tf.float32),
        box_weights,
    ).numpy()
    return indices, targets.astype(np.float32), regions.matched_label[indices].astype(np.int32)
