"""R-CNN (Girshick, Donahue, Darrell, Malik 2014, "Rich feature hierarchies for accurate object
detection and semantic segmentation"), with the paper's stage-wise training.

    image → selective search proposals (OpenCV, outside the graph, ``rcnn_zoo.proposals``)
          → every proposal warped to S×S with p pixels of context          (appendix A)
          → CNN per region: backbone → pool5 → fc6 → fc7
          → per-class linear SVMs on fc7 (or a softmax over C+1)  → scores [R, C]
          → per-class ridge box regressors on pool5               → boxes  [R, C, 4] (appendix C)
          → class-wise NMS (IoU 0.3)                               → detections

Training (section 2.3 and appendices B, C), each stage a ``fit`` of a small Keras model sharing
this model's layers:

1. :meth:`RCNN.fine_tune` — softmax over C+1 on warped regions; IoU ≥ 0.5 with a ground-truth box
   is that box's class, the rest background; batches of 32 foreground + 96 background regions.
2. :meth:`RCNN.train_svms` — one linear SVM per class on fc7 features (a ``Dense(C)`` trained
   with the hinge loss and L2); positives are the ground-truth boxes only, negatives the regions
   with IoU < 0.3 with every box of the class; hard negative mining over a few rounds.
3. :meth:`RCNN.train_box_regressors` — ridge regression of ``(dx, dy, dw, dh)`` from pool5
   features, for regions with IoU ≥ 0.6 with a ground-truth box (a ``Dense(4C)`` with L2).

:meth:`RCNN.prepare_regions` gathers the candidate regions of a training set (ground truth plus
proposals, with their overlaps) and :meth:`RCNN.fine_tune_dataset` samples stage 1's batches:

    model = RCNN(num_classes=20, backbone="vgg16", backbone_weights="imagenet")
    regions = model.prepare_regions(images, boxes, labels)        # selective search, overlaps
    model.fine_tune(model.fine_tune_dataset(regions, num_batches=20000), epochs=1)
    model.train_svms(regions)
    model.train_box_regressors(regions)
    detections = model.predict(test_images)                       # selective search inside

Training sets live in memory (images, and the fc7/pool5 features of every region during the
SVM and regressor stages); the paper's VOC-scale runs cached features on disk instead.

Why R-CNN is not a :class:`~rcnn_zoo.models.detector.TwoStageDetector`: that protocol trains
one multi-task loss per image batch in one forward pass. R-CNN trains three separate objectives
on different inputs (warped regions; cached fc7 features; cached pool5 features), and its
proposals come from CPU code outside the graph, so it is a plain ``keras.Model`` whose stages
call ``fit`` themselves and whose :meth:`RCNN.predict` is a Python loop (selective search,
then the TF graph on chunks of warped regions).

Shapes: ``B`` images, ``R`` proposals of an image, ``K`` regions in a flat list (of any images),
``S`` = ``warp_size``, ``C`` foreground classes, ``P`` pool5 features, ``F`` fc7 features,
``D`` = ``max_detections``.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from rcnn_zoo.backbones import build_backbone
from rcnn_zoo.export import export_saved_model
from rcnn_zoo.heads import FCBoxHead
from rcnn_zoo.models import preprocessing
from rcnn_zoo.ops import boxes as box_ops
from rcnn_zoo.ops import nms as nms_ops

# Per-backbone defaults for what the constructor leaves as None. The paper's AlexNet warps to
# 227 px; VGG16 uses 224 so pool5 is 7×7×512 as in VGG's own classifier (fc6 = 25088 → 4096).
BACKBONE_DEFAULTS = {
    "vgg16": {"warp_size": 224, "fc_dim": 4096, "fc_dropout": 0.5, "region_batch_size": 32},
    "tiny": {"warp_size": 64, "fc_dim": 256, "fc_dropout": 0.0, "region_batch_size": 256},
    # ResNet C4: conv5 takes 14×14 conv4 maps, i.e. 224 px regions; pool5 is its 2048-d average.
    "resnet50": {"warp_size": 224, "fc_dim": 1024, "fc_dropout": 0.0, "region_batch_size": 16},
    "resnet101": {"warp_size": 224, "fc_dim": 1024, "fc_dropout": 0.0, "region_batch_size": 16},
}
GENERIC_DEFAULTS = {"warp_size": 227, "fc_dim": 4096, "fc_dropout": 0.5, "region_batch_size": 32}

# The original code scales fc7/pool5 features so their mean L2 norm over the training regions
# is 20 before training SVMs and regressors (rcnn_train.m, feat_norm_mean); C = 1e-3 and
# lambda = 1000 are tuned for that scale.
FEATURE_NORM = 20.0
SVM_HARD_THRESHOLD = -1.0 - 1e-4  # a negative scoring above this violates the margin


# ---------------------------------------------------------------------------- warping
def context_boxes(boxes, warp_size, context_padding):
    """Dilate ``[..., 4]`` xyxy boxes about their centres by ``S / (S − 2p)`` per axis.

    Warped to ``S × S``, a dilated box shows the original box in the central ``(S − 2p)²``
    pixels and exactly ``p`` pixels of context on every side (appendix A, "warp" with
    ``p = 16``). Width and height scale independently (the paper's anisotropic warp).
    """
    factor = float(warp_size) / (float(warp_size) - 2.0 * float(context_padding))
    cx = 0.5 * (boxes[..., 0] + boxes[..., 2])
    cy = 0.5 * (boxes[..., 1] + boxes[..., 3])
    half_w = 0.5 * factor * (boxes[..., 2] - boxes[..., 0])
    half_h = 0.5 * factor * (boxes[..., 3] - boxes[..., 1])
    return tf.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=-1)


def warp_regions(images, boxes, box_indices, warp_size, context_padding=16, fill_value=0.0,
                 image_sizes=None):
    """Crop every box with context padding and warp it to ``S × S`` (pure TF, graph-safe).

    Args:
        images: ``[B, H, W, 3]`` raw pixels (any real dtype), padded bottom/right.
        boxes: ``[K, 4]`` float xyxy continuous pixels.
        box_indices: ``[K]`` int32, the image of each box.
        warp_size: ``S``, Python int.
        context_padding: ``p`` pixels of context at the warped size, ``0 ≤ p < S/2``.
        fill_value: scalar or ``[3]`` pixel used where a dilated box leaves its image (the mean
            pixel, see :func:`rcnn_zoo.models.preprocessing.mean_pixel`).
        image_sizes: optional ``[B, 2]`` (height, width) of each image inside the padded batch;
            default the batch's ``H, W``.

    Returns:
        ``[K, S, S, 3]`` float32. Output pixel ``(i, j)`` holds the bilinear value of the image
        at the source point of its centre, ``x = X1 + (j + ½)·W'/S``, ``y = Y1 + (i + ½)·H'/S``
        for the dilated box ``(X1, Y1, X1 + W', Y1 + H')`` of :func:`context_boxes` (pixel
        ``c`` has its centre at ``c + ½``; inside the image but beyond the outermost pixel
        centres the edge pixel is repeated), or ``fill_value`` when that point lies outside
        ``[0, width] × [0, height]``.

    ``tf.image.crop_and_resize`` does the sampling: it places the first and last samples on
    the box corners it is given, so the normalised corners are those of the first and last
    sample centres, in a copy of the image with one replicated edge pixel on every side.
    """
    return warp_padded(pad_for_warp(images, fill_value), boxes, box_indices, warp_size,
                       context_padding, fill_value, image_sizes)


def pad_for_warp(images, fill_value=0.0):
    """``images − fill_value`` with one replicated edge pixel on every side, float32
    ``[B, H+2, W+2, 3]``: what :func:`warp_padded` samples. Computing it once per image set
    saves redoing it for every batch of regions."""
    fill = tf.reshape(tf.cast(tf.broadcast_to(fill_value, [3]), tf.float32), [1, 1, 1, 3])
    return tf.pad(tf.cast(images, tf.float32) - fill, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")


def warp_padded(padded, boxes, box_indices, warp_size, context_padding=16, fill_value=0.0,
                image_sizes=None):
    """:func:`warp_regions` on images already prepared by :func:`pad_for_warp`."""
    warp_size = int(warp_size)
    if not 0 <= context_padding < warp_size / 2:
        raise ValueError(f"context_padding must be in [0, warp_size/2), got {context_padding}")
    boxes = tf.cast(boxes, tf.float32)
    box_indices = tf.cast(box_indices, tf.int32)
    fill = tf.reshape(tf.cast(tf.broadcast_to(fill_value, [3]), tf.float32), [1, 1, 1, 3])
    shape = tf.shape(padded)
    height, width = tf.cast(shape[1] - 2, tf.float32), tf.cast(shape[2] - 2, tf.float32)
    if image_sizes is None:
        limits_h = tf.fill(tf.shape(box_indices), height)
        limits_w = tf.fill(tf.shape(box_indices), width)
    else:
        sizes = tf.gather(tf.cast(image_sizes, tf.float32), box_indices)
        limits_h, limits_w = sizes[:, 0], sizes[:, 1]

    dilated = context_boxes(boxes, warp_size, context_padding)
    step_x = (dilated[:, 2] - dilated[:, 0]) / warp_size
    step_y = (dilated[:, 3] - dilated[:, 1]) / warp_size
    centres = tf.range(warp_size, dtype=tf.float32) + 0.5
    xs = dilated[:, 0:1] + centres[None, :] * step_x[:, None]  # [K, S] source x of each column
    ys = dilated[:, 1:2] + centres[None, :] * step_y[:, None]  # [K, S] source y of each row

    # Continuous x lies at index x − ½ of the image, x + ½ of the edge-padded copy, whose
    # index range [0, W + 1] crop_and_resize normalises by W + 1.
    normalised = tf.stack(
        [
            (ys[:, 0] + 0.5) / (height + 1.0),
            (xs[:, 0] + 0.5) / (width + 1.0),
            (ys[:, -1] + 0.5) / (height + 1.0),
            (xs[:, -1] + 0.5) / (width + 1.0),
        ],
        axis=-1,
    )
    crops = tf.image.crop_and_resize(
        padded, normalised, box_indices, [warp_size, warp_size], method="bilinear",
        extrapolation_value=0.0,
    )
    inside_x = (xs >= 0.0) & (xs <= limits_w[:, None])
    inside_y = (ys >= 0.0) & (ys <= limits_h[:, None])
    inside = inside_y[:, :, None, None] & inside_x[:, None, :, None]
    return tf.where(inside, crops, 0.0) + fill


# ---------------------------------------------------------------------------- region sets
@dataclasses.dataclass
class RegionSet:
    """The candidate regions of a training set: every ground-truth box and every proposal.

    Built by :meth:`RCNN.prepare_regions`. ``N`` images, ``K`` regions over all images.

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


def _iou_np(boxes1, boxes2):
    """``[M, 4]`` × ``[G, 4]`` xyxy → ``[M, G]`` IoU (continuous pixels)."""
    b1, b2 = boxes1[:, None, :], boxes2[None, :, :]
    iw = np.clip(np.minimum(b1[..., 2], b2[..., 2]) - np.maximum(b1[..., 0], b2[..., 0]), 0, None)
    ih = np.clip(np.minimum(b1[..., 3], b2[..., 3]) - np.maximum(b1[..., 1], b2[..., 1]), 0, None)
    inter = iw * ih
    area1 = (b1[..., 2] - b1[..., 0]) * (b1[..., 3] - b1[..., 1])
    area2 = (b2[..., 2] - b2[..., 0]) * (b2[..., 3] - b2[..., 1])
    union = area1 + area2 - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0).astype(np.float32)


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
    height = max(image.shape[0] for image in images)
    width = max(image.shape[1] for image in images)
    dtype = np.uint8 if all(image.dtype == np.uint8 for image in images) else np.float32
    padded = np.zeros((len(images), height, width, 3), dtype)
    sizes = np.zeros((len(images), 2), np.int32)
    columns = {k: [] for k in ("boxes", "image_index", "gt_label", "max_iou", "matched_label",
                               "matched_box", "class_iou")}
    for n, image in enumerate(images):
        padded[n, : image.shape[0], : image.shape[1]] = image
        sizes[n] = image.shape[:2]
        labels = np.asarray(gt_labels[n], np.int64).reshape(-1)
        gt = np.asarray(gt_boxes[n], np.float32).reshape(-1, 4)[labels >= 0]
        labels = labels[labels >= 0].astype(np.int32)
        if np.any(labels >= num_classes):
            raise ValueError(f"image {n} has labels ≥ num_classes ({num_classes})")
        props = np.asarray(proposals[n], np.float32).reshape(-1, 4)
        props = props[(props[:, 2] > props[:, 0]) & (props[:, 3] > props[:, 1])]
        candidates = np.concatenate([gt, props], axis=0)
        iou = _iou_np(candidates, gt)  # [M, G]
        class_iou = np.zeros((len(candidates), num_classes), np.float32)
        for c in range(num_classes):
            if np.any(labels == c):
                class_iou[:, c] = iou[:, labels == c].max(axis=1)
        if len(gt):
            best = iou.argmax(axis=1)
            columns["max_iou"].append(iou.max(axis=1))
            columns["matched_label"].append(labels[best])
            columns["matched_box"].append(gt[best])
        else:
            columns["max_iou"].append(np.zeros(len(candidates), np.float32))
            columns["matched_label"].append(np.full(len(candidates), -1, np.int32))
            columns["matched_box"].append(np.zeros((len(candidates), 4), np.float32))
        columns["boxes"].append(candidates)
        columns["image_index"].append(np.full(len(candidates), n, np.int32))
        columns["gt_label"].append(np.concatenate([labels, np.full(len(props), -1, np.int32)]))
        columns["class_iou"].append(class_iou)
    return RegionSet(
        images=padded,
        image_sizes=sizes,
        **{k: np.concatenate(v, axis=0) for k, v in columns.items()},
    )


def svm_labels(regions, negative_iou=0.3):
    """Per-class SVM labels ``[K, C]`` int8: ``+1`` positive, ``-1`` negative, ``0`` unused.

    Section 2.3: only the ground-truth boxes of class ``c`` are its positives; regions whose IoU
    with every box of class ``c`` is below ``negative_iou`` are its negatives (including other
    classes' boxes); the grey zone is ignored.
    """
    classes = np.arange(regions.num_classes)
    positive = regions.gt_label[:, None] == classes[None, :]
    negative = (regions.class_iou < negative_iou) & ~positive
    return np.where(positive, 1, np.where(negative, -1, 0)).astype(np.int8)


def mine_hard_negatives(scores, negative, cached, max_new=None, hard_threshold=SVM_HARD_THRESHOLD):
    """Indices of the hard negatives of one class to add to its cache, hardest first.

    A negative is hard when its SVM score exceeds ``hard_threshold`` (−1 − 1e-4: it lies inside
    the margin or on the wrong side). Of those not yet ``cached``, the ``max_new`` highest
    scoring are returned (all if ``None``), ties in index order.

    Args:
        scores: ``[K]`` SVM scores; negative, cached: ``[K]`` bool.
    """
    scores = np.asarray(scores, np.float64)
    candidates = np.flatnonzero(np.asarray(negative) & ~np.asarray(cached) & (scores > hard_threshold))
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    return order if max_new is None else order[: int(max_new)]


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


# ---------------------------------------------------------------------------- stage losses
def svm_hinge_loss(positive_weight=2.0):
    """Per-class hinge loss for ``y_true [n, C]`` in {+1, −1, 0 (unused)} and scores ``[n, C]``.

    Returns a loss function giving ``[n]``: the sum over classes of ``w·max(0, 1 − y·z)``,
    ``w = positive_weight`` for positives (the original code's ``-w1 2``), 1 for negatives.
    """

    def loss(y_true, y_pred):
        y = tf.cast(y_true, tf.float32)
        weight = tf.where(y > 0, positive_weight, tf.where(y < 0, 1.0, 0.0))
        return tf.reduce_sum(weight * tf.nn.relu(1.0 - y * tf.cast(y_pred, tf.float32)), axis=-1)

    return loss


def class_specific_squared_error(num_classes):
    """``y_true [n, 5]`` = (4 targets, class) and ``y_pred [n, 4C]`` → ``[n]`` squared error of
    the class's own four outputs (the other classes' regressors are not trained on it)."""

    def loss(y_true, y_pred):
        y_true = tf.cast(y_true, tf.float32)
        classes = tf.cast(y_true[:, 4], tf.int32)
        predicted = tf.gather(tf.reshape(y_pred, [-1, num_classes, 4]), classes, batch_dims=1)
        return tf.reduce_sum(tf.square(y_true[:, :4] - tf.cast(predicted, tf.float32)), axis=-1)

    return loss


class _Stage(keras.Model):
    """``fit`` on part of a detector: ``forward(x, training)`` over the layers in ``parts``,
    plus ``l2 · Σ kernel²`` over ``penalised`` kernels (biases are not regularised)."""

    def __init__(self, parts, forward, l2=0.0, penalised=(), **kwargs):
        super().__init__(**kwargs)
        self.parts = list(parts)
        self._forward = forward
        self.l2 = float(l2)
        penalised = tuple(penalised)
        self._penalised = lambda: penalised  # a callable: the variables are the parts' own
        self.built = True

    def call(self, x, training=False):
        return self._forward(x, training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training)
        if self.l2 and self._penalised():
            penalty = tf.add_n([tf.reduce_sum(tf.square(v)) for v in self._penalised()])
            loss = loss + self.l2 * penalty
        return loss


# ---------------------------------------------------------------------------- the model
@keras.saving.register_keras_serializable(package="rcnn_zoo")
class RCNN(keras.Model):
    """R-CNN as a ``keras.Model``: train with the stage methods, ``predict`` on raw images.

    Labels are ``0 … num_classes−1`` (background is internal: head index 0 of the fine-tuning
    softmax). ``predict`` returns ``{"boxes" [B,D,4], "scores" [B,D], "labels" [B,D] (−1
    padding), "num_detections" [B]}`` like the other detectors; with ``classifier="svm"`` the
    scores are SVM margins (unbounded, ranked as in the paper), with ``"softmax"``
    probabilities.

    Args:
        num_classes: foreground classes ``C``.
        backbone: ``"vgg16"``, ``"tiny"`` or another single-level backbone name (ResNet C4:
            conv5 then global average pooling form pool5). FPN backbones are refused.
        backbone_weights: ``None`` or ``"imagenet"`` (fc6/fc7 start random either way).
        classifier: ``"svm"`` (the paper's) or ``"softmax"`` (the fine-tuned C+1 softmax,
            appendix B's ablation) scores regions at test time.
        warp_size: ``S``; default 224 for vgg16 (VGG's input, pool5 7×7) and ResNet, 64 for
            tiny, 227 (the paper's AlexNet) otherwise.
        context_padding: ``p`` pixels of context around the box at the warped size (16).
        bounding_box_format: format of boxes given (targets, proposals) and returned.
        class_names: optional ``num_classes`` names.
        score_threshold: detections need a score above it; default −1 for SVM margins (the
            negatives' side of the margin), 0.05 for softmax probabilities.
        nms_threshold: class-wise NMS IoU threshold (0.3, the paper's).
        max_detections: ``D``.
        fc_dim, fc_dropout: width and dropout of fc6/fc7 (vgg16: 4096, 0.5; tiny: 256, 0;
            ResNet: 1024, 0).
        proposal_mode, max_proposals: selective search at predict time (``"fast"``, 2000).
        region_batch_size: regions per forward pass in ``predict`` and feature extraction.
        box_weights: ``(wx, wy, ww, wh)`` of the regression targets; ``(1, 1, 1, 1)`` is the
            paper's appendix C.
    """

    def __init__(
        self,
        num_classes,
        backbone="vgg16",
        backbone_weights=None,
        classifier="svm",
        warp_size=None,
        context_padding=16,
        bounding_box_format="xyxy",
        class_names=None,
        score_threshold=None,
        nms_threshold=0.3,
        max_detections=100,
        fc_dim=None,
        fc_dropout=None,
        proposal_mode="fast",
        max_proposals=2000,
        region_batch_size=None,
        box_weights=(1.0, 1.0, 1.0, 1.0),
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(num_classes) < 1:
            raise ValueError(f"num_classes counts foreground classes and must be ≥ 1, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but num_classes is {num_classes}")
        if classifier not in ("svm", "softmax"):
            raise ValueError(f"classifier must be 'svm' or 'softmax', got {classifier!r}")
        defaults = BACKBONE_DEFAULTS.get(backbone, GENERIC_DEFAULTS)
        self.num_classes = int(num_classes)
        self.backbone_name = backbone
        self.backbone_weights = backbone_weights
        self.classifier = classifier
        self.warp_size = int(warp_size if warp_size is not None else defaults["warp_size"])
        self.context_padding = float(context_padding)
        if not 0 <= self.context_padding < self.warp_size / 2:
            raise ValueError(f"context_padding must be in [0, warp_size/2), got {context_padding}")
        self.bounding_box_format = bounding_box_format
        self.class_names = list(class_names) if class_names is not None else None
        self.score_threshold = score_threshold
        self.nms_threshold = float(nms_threshold)
        self.max_detections = int(max_detections)
        self.fc_dim = int(fc_dim if fc_dim is not None else defaults["fc_dim"])
        self.fc_dropout = float(fc_dropout if fc_dropout is not None else defaults["fc_dropout"])
        self.proposal_mode = proposal_mode
        self.max_proposals = max_proposals
        self.region_batch_size = int(region_batch_size or defaults["region_batch_size"])
        self.box_weights = tuple(float(w) for w in box_weights)
        self._build_layers(build_backbone(backbone, weights=backbone_weights))
        self._functions = {}

    # ------------------------------------------------------------------ construction
    def _build_layers(self, spec):
        if len(spec.feature_names) != 1:
            raise ValueError(
                f"R-CNN runs the CNN on each warped region and needs a single-level backbone; "
                f"{self.backbone_name!r} has levels {spec.feature_names}"
            )
        self.preprocessing = spec.preprocessing
        self.fill_pixel = preprocessing.mean_pixel(spec.preprocessing)
        self.backbone = spec.model
        self.feature_name = spec.feature_names[0]
        self.res5 = spec.res5 if spec.roi_head == "res5" else None
        # pool5: VGG's 2×2 max pooling after conv5 (the backbones stop before it), or for
        # ResNet C4 the conv5 stage and global average pooling.
        self.pool5 = layers.MaxPooling2D(2, name="pool5") if self.res5 is None else None
        feature = self.backbone.compute_output_spec(
            keras.KerasTensor((None, self.warp_size, self.warp_size, 3))
        )[self.feature_name]
        if self.res5 is None:
            pooled_shape = self.pool5.compute_output_shape(feature.shape)
        else:
            expected = tuple(self.res5.input_shape[1:3])
            if None not in expected and expected != tuple(feature.shape[1:3]):
                raise ValueError(
                    f"{self.backbone_name!r}'s conv5 stage takes {expected} conv4 maps; warp_size "
                    f"{self.warp_size} gives {tuple(feature.shape[1:3])} (use 224)"
                )
            pooled_shape = (None, 1, 1, self.res5.output_shape[-1])
        if any(d is not None and d < 1 for d in pooled_shape[1:3]):
            raise ValueError(f"warp_size {self.warp_size} is too small for {self.backbone_name!r}")
        self.pool5_shape = tuple(int(d) for d in pooled_shape[1:])
        self.fc_head = FCBoxHead(self.fc_dim, self.fc_dropout, name="fc_head")  # fc6, fc7
        self.fc_head.build((None,) + self.pool5_shape)
        self.cls_score = layers.Dense(
            self.num_classes + 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            name="cls_score",
        )
        self.cls_score.build((None, self.fc_dim))
        self.svm = layers.Dense(self.num_classes, kernel_initializer="zeros", name="svm")
        self.svm.build((None, self.fc_dim))
        self.bbox_regressor = layers.Dense(
            4 * self.num_classes, kernel_initializer="zeros", name="bbox_regressor"
        )
        self.bbox_regressor.build((None, int(np.prod(self.pool5_shape))))
        self.built = True

    # ------------------------------------------------------------------ graph pieces
    def warp(self, images, boxes, box_indices, image_sizes=None):
        """:func:`warp_regions` with this model's ``S``, ``p`` and mean pixel → ``[K,S,S,3]``."""
        return warp_regions(images, boxes, box_indices, self.warp_size, self.context_padding,
                            self.fill_pixel, image_sizes)

    def _warp_padded(self, padded, boxes, box_indices, image_sizes=None):
        """:meth:`warp` on images prepared once by :func:`pad_for_warp`."""
        return warp_padded(padded, boxes, box_indices, self.warp_size, self.context_padding,
                           self.fill_pixel, image_sizes)

    def region_features(self, regions, training=False):
        """Warped regions ``[K,S,S,3]`` raw pixels → ``(pool5 [K,P], fc7 [K,F])`` float32."""
        x = preprocessing.normalize(tf.cast(regions, tf.float32), self.preprocessing)
        feature = self.backbone(x, training=training)[self.feature_name]
        if self.res5 is None:
            pooled = self.pool5(feature)
        else:
            pooled = tf.reduce_mean(self.res5(feature, training=training), axis=[1, 2], keepdims=True)
        fc7 = self.fc_head(pooled, training=training)
        flat = tf.reshape(pooled, [tf.shape(pooled)[0], -1])
        return tf.cast(flat, tf.float32), tf.cast(fc7, tf.float32)

    def classify(self, fc7):
        """fc7 ``[K,F]`` → class scores ``[K,C]`` (SVM margins or softmax probabilities)."""
        if self.classifier == "svm":
            return tf.cast(self.svm(fc7), tf.float32)
        return tf.nn.softmax(tf.cast(self.cls_score(fc7), tf.float32), axis=-1)[:, 1:]

    def regress(self, pool5):
        """pool5 ``[K,P]`` → class-specific deltas ``[K,C,4]``."""
        return tf.reshape(tf.cast(self.bbox_regressor(pool5), tf.float32), [-1, self.num_classes, 4])

    def score_regions(self, images, boxes, box_indices, image_sizes=None):
        """Boxes ``[K,4]`` xyxy of ``images [B,H,W,3]`` → ``(scores [K,C], deltas [K,C,4])``."""
        return self._score_padded(pad_for_warp(images, self.fill_pixel), boxes, box_indices, image_sizes)

    def _score_padded(self, padded, boxes, box_indices, image_sizes=None):
        pool5, fc7 = self.region_features(self._warp_padded(padded, boxes, box_indices, image_sizes))
        return self.classify(fc7), self.regress(pool5)

    def postprocess(self, proposals, scores, deltas, height, width):
        """Regress, clip and suppress: proposals ``[B,R,4]`` xyxy (rows without area are
        padding), ``scores [B,R,C]``, ``deltas [B,R,C,4]`` → detections in
        ``bounding_box_format`` clipped to ``height × width``.

        Class-wise greedy NMS on the regressed boxes, one NMS call over all classes of an
        image (boxes of different classes never suppress each other).
        """
        proposals = tf.cast(proposals, tf.float32)
        height = tf.cast(height, tf.float32)
        width = tf.cast(width, tf.float32)
        valid = (proposals[..., 2] > proposals[..., 0]) & (proposals[..., 3] > proposals[..., 1])
        boxes = box_ops.decode(deltas, proposals[:, :, None, :], self.box_weights)
        boxes = box_ops.clip_to_image(boxes, height, width)  # [B,R,C,4]
        big_enough = (boxes[..., 2] - boxes[..., 0] >= 1e-2) & (boxes[..., 3] - boxes[..., 1] >= 1e-2)
        keep = valid[..., None] & big_enough
        scores = tf.where(keep, tf.cast(scores, tf.float32), float("-inf"))
        batch = tf.shape(boxes)[0]
        flat_boxes = tf.reshape(boxes, [batch, -1, 4])
        flat_scores = tf.reshape(scores, [batch, -1])
        classes = tf.tile(tf.range(self.num_classes), [tf.shape(flat_scores)[1] // self.num_classes])
        classes = tf.broadcast_to(classes[None, :], tf.shape(flat_scores))
        indices, count = nms_ops.batched_nms(
            flat_boxes, flat_scores, self.max_detections, self.nms_threshold,
            score_threshold=self._score_threshold(), groups=classes,
        )
        out_boxes = nms_ops.gather_padded(flat_boxes, indices, count)
        out_scores = nms_ops.gather_padded(flat_scores, indices, count)
        labels = nms_ops.gather_padded(classes, indices, count, pad_value=-1)
        out_boxes = box_ops.convert_format(
            out_boxes, "xyxy", self.bounding_box_format, height=height, width=width
        )
        return {"boxes": out_boxes, "scores": out_scores, "labels": labels, "num_detections": count}

    def _score_threshold(self):
        if self.score_threshold is not None:
            return float(self.score_threshold)
        return -1.0 if self.classifier == "svm" else 0.05

    def call(self, inputs, training=False):
        """Detections on given proposals, all in one graph.

        ``inputs = {"images": [B,H,W,3] raw pixels, "proposals": [B,R,4]}`` (proposals in
        ``bounding_box_format``, all-zero rows are padding). Every proposal of the batch is
        warped at once, so memory grows with ``B·R·S²``; :meth:`predict` runs selective search
        and chunks the regions instead.
        """
        if not isinstance(inputs, dict) or "images" not in inputs or "proposals" not in inputs:
            raise ValueError(
                "RCNN is called on {'images': [B,H,W,3], 'proposals': [B,R,4]}; use "
                "model.predict(images) to run selective search on raw images"
            )
        images = tf.cast(inputs["images"], tf.float32)
        shape = tf.shape(images)
        height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
        proposals = self._to_xyxy(inputs["proposals"], height, width)
        batch, num = tf.shape(proposals)[0], tf.shape(proposals)[1]
        flat = tf.reshape(proposals, [-1, 4])
        indices = tf.repeat(tf.range(batch), num)
        scores, deltas = self.score_regions(images, flat, indices)
        scores = tf.reshape(scores, [batch, num, self.num_classes])
        deltas = tf.reshape(deltas, [batch, num, self.num_classes, 4])
        return self.postprocess(proposals, scores, deltas, height, width)

    def _to_xyxy(self, boxes, height, width):
        boxes = tf.cast(boxes, tf.float32)
        padding = tf.reduce_all(tf.equal(boxes, 0.0), axis=-1, keepdims=True)
        xyxy = box_ops.convert_format(boxes, self.bounding_box_format, "xyxy", height=height, width=width)
        return tf.where(padding, 0.0, xyxy)

    # ------------------------------------------------------------------ compiled functions
    def _function(self, name):
        """tf.functions traced once for any number of regions and any image size (per
        classifier, so switching ``model.classifier`` takes effect)."""
        key = (name, self.classifier)
        if key not in self._functions:
            image_spec = tf.TensorSpec([None, None, None, 3], tf.float32)
            box_spec = tf.TensorSpec([None, 4], tf.float32)
            index_spec = tf.TensorSpec([None], tf.int32)
            size_spec = tf.TensorSpec([None, 2], tf.int32)
            # Images come prepared by pad_for_warp (once per image set, not per chunk).
            if name == "score":
                fn = tf.function(self._score_padded,
                                 input_signature=[image_spec, box_spec, index_spec, size_spec])
            elif name == "features":
                fn = tf.function(
                    lambda padded, boxes, indices, sizes: self.region_features(
                        self._warp_padded(padded, boxes, indices, sizes)
                    ),
                    input_signature=[image_spec, box_spec, index_spec, size_spec],
                )
            elif name == "postprocess":
                fn = tf.function(
                    self.postprocess,
                    input_signature=[
                        tf.TensorSpec([None, None, 4], tf.float32),
                        tf.TensorSpec([None, None, self.num_classes], tf.float32),
                        tf.TensorSpec([None, None, self.num_classes, 4], tf.float32),
                        tf.TensorSpec([], tf.float32),
                        tf.TensorSpec([], tf.float32),
                    ],
                )
            else:
                raise KeyError(name)
            self._functions[key] = fn
        return self._functions[key]

    # ------------------------------------------------------------------ inference
    def propose(self, image):
        """Selective search boxes ``[R, 4]`` xyxy pixels of one ``[H, W, 3]`` image."""
        from rcnn_zoo.proposals import selective_search  # noqa: PLC0415 (OpenCV is optional)

        return selective_search(image, mode=self.proposal_mode, max_proposals=self.max_proposals)

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None,
                proposals=None, region_batch_size=None):
        """Detect objects in raw images (Python-level: not a Keras predict loop).

        For each image: selective search (CPU, OpenCV) unless ``proposals`` are given, then the
        TF graph (warp → CNN → scores and deltas) on chunks of ``region_batch_size`` regions,
        then regression, clipping and class-wise NMS over all regions of the image.

        Args:
            x: ``[B, H, W, 3]`` raw RGB pixels, a list of ``[H_i, W_i, 3]`` images of any sizes,
                or ``{"images": ..., "proposals": ...}``.
            batch_size, steps, callbacks: accepted for Keras compatibility and ignored (images
                are processed one by one).
            verbose: progress bar over images (``"auto"`` = 1).
            proposals: optional per-image ``[R_i, 4]`` boxes in ``bounding_box_format`` (or a
                zero-padded ``[B, R, 4]`` array) instead of selective search.
            region_batch_size: regions per forward pass (default the model's).

        Returns:
            dict of NumPy arrays ``boxes [B,D,4]`` (``bounding_box_format``, each image's own
            pixels), ``scores [B,D]``, ``labels [B,D]`` (−1 padding), ``num_detections [B]``.
        """
        del batch_size, steps, callbacks
        if isinstance(x, dict):
            if proposals is not None:
                raise ValueError("give proposals either inside x or as proposals=, not both")
            x, proposals = x["images"], x.get("proposals")
        images = [np.asarray(image) for image in (x if isinstance(x, (list, tuple)) else np.asarray(x))]
        if proposals is not None and len(proposals) != len(images):
            raise ValueError(f"{len(images)} images but proposals for {len(proposals)}")
        chunk = int(region_batch_size or self.region_batch_size)
        progress = keras.utils.Progbar(len(images)) if verbose not in (0, False) else None
        results = []
        for i, image in enumerate(images):
            height, width = image.shape[:2]
            if proposals is None:
                boxes = self.propose(image)
            else:
                given = np.asarray(proposals[i], np.float32).reshape(-1, 4)
                boxes = self._to_xyxy(given, height, width).numpy()
                boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
            results.append(self._detect_image(image, boxes, chunk))
            if progress is not None:
                progress.update(i + 1)
        return {key: np.stack([r[key] for r in results]) for key in results[0]} if results else {}

    def _detect_image(self, image, boxes, chunk):
        """One image ``[H,W,3]`` and its proposals ``[R,4]`` xyxy → detections (NumPy)."""
        height, width = image.shape[0], image.shape[1]
        padded = pad_for_warp(np.asarray(image, np.float32)[None], self.fill_pixel)
        sizes = tf.constant([[height, width]], tf.int32)
        score_fn = self._function("score")
        scores, deltas = [], []
        for start in range(0, len(boxes), chunk):
            part = tf.constant(boxes[start:start + chunk], tf.float32)
            s, d = score_fn(padded, part, tf.zeros([tf.shape(part)[0]], tf.int32), sizes)
            scores.append(s)
            deltas.append(d)
        if not scores:  # no proposal: nothing to detect
            boxes = np.zeros((1, 4), np.float32)
            scores = [tf.fill([1, self.num_classes], float("-inf"))]
            deltas = [tf.zeros([1, self.num_classes, 4])]
        out = self._function("postprocess")(
            tf.constant(boxes, tf.float32)[None],
            tf.concat(scores, 0)[None],
            tf.concat(deltas, 0)[None],
            tf.constant(float(height)),
            tf.constant(float(width)),
        )
        return {key: value.numpy()[0] for key, value in out.items()}

    def predict_image(self, image, proposals=None):
        """Detections of one ``[H, W, 3]`` image: :meth:`predict` without the batch axis."""
        out = self.predict([image], verbose=0, proposals=None if proposals is None else [proposals])
        return {key: value[0] for key, value in out.items()}

    def predict_on_batch(self, x):
        """Same as :meth:`predict` (so ``rcnn_zoo.evaluation`` can drive R-CNN)."""
        return self.predict(x, verbose=0)

    def fit(self, *args, **kwargs):
        raise TypeError(
            "R-CNN trains in stages: regions = model.prepare_regions(images, boxes, labels); "
            "model.fine_tune(model.fine_tune_dataset(regions, ...)); model.train_svms(regions); "
            "model.train_box_regressors(regions)"
        )

    # ------------------------------------------------------------------ training data
    def prepare_regions(self, images, boxes, labels, proposals=None, cache_dir=None, verbose=0):
        """Candidate regions of a training set: ground-truth boxes plus proposals.

        Args:
            images: ``[N, H, W, 3]`` raw pixels or a list of images of any sizes.
            boxes: per image ``[G_i, 4]`` in ``bounding_box_format`` (or padded ``[N, G, 4]``).
            labels: per image ``[G_i]`` (``-1`` = padding).
            proposals: per image ``[R_i, 4]`` xyxy pixels (``rcnn_zoo.proposals`` format);
                ``None`` runs selective search with the model's settings through
                ``rcnn_zoo.proposals.compute_proposals`` (cached in ``cache_dir`` if given).
        Returns:
            a :class:`RegionSet` (kept in memory, with the images).
        """
        images = [np.asarray(image) for image in images]
        xyxy = []
        for image, image_boxes in zip(images, boxes):
            h, w = image.shape[:2]
            converted = box_ops.convert_format(
                tf.constant(np.asarray(image_boxes, np.float32).reshape(-1, 4)),
                self.bounding_box_format, "xyxy", height=float(h), width=float(w),
            )
            xyxy.append(box_ops.clip_to_image(converted, h, w).numpy())
        if proposals is None:
            from rcnn_zoo.proposals import compute_proposals  # noqa: PLC0415 (OpenCV is optional)

            proposals = compute_proposals(images, cache_dir=cache_dir, mode=self.proposal_mode,
                                          max_proposals=self.max_proposals, verbose=bool(verbose))
        return build_region_set(images, xyxy, labels, proposals, self.num_classes)

    def fine_tune_dataset(self, regions, num_batches, batch_size=128, foreground_fraction=0.25,
                          foreground_iou=0.5, seed=0):
        """Batches of warped regions for :meth:`fine_tune` (section 2.3).

        Regions with IoU ≥ ``foreground_iou`` with a ground-truth box (the boxes themselves
        included) are that box's class (head index ``c + 1``), all others background (0). Each
        batch draws ``round(batch_size · foreground_fraction)`` foreground regions (32 of 128)
        and background regions for the rest (96), uniformly with replacement, anew every epoch.

        Returns:
            ``tf.data.Dataset`` of ``num_batches`` × ``(regions [batch,S,S,3] float32 raw
            pixels, labels [batch] int32)``. The images are held in memory.
        """
        foreground = np.flatnonzero((regions.max_iou >= foreground_iou) & (regions.matched_label >= 0))
        background = np.setdiff1d(np.arange(len(regions)), foreground)
        num_fg = int(round(batch_size * foreground_fraction)) if len(foreground) else 0
        num_bg = batch_size - num_fg if len(background) else 0
        if num_fg + num_bg == 0:
            raise ValueError("the region set is empty")
        if num_bg == 0:
            num_fg = batch_size
        head_labels = np.zeros(len(regions), np.int32)
        head_labels[foreground] = regions.matched_label[foreground] + 1
        padded = pad_for_warp(regions.images, self.fill_pixel)
        sizes = tf.constant(regions.image_sizes)
        boxes = tf.constant(regions.boxes, tf.float32)
        image_index = tf.constant(regions.image_index)
        head_labels = tf.constant(head_labels)
        foreground = tf.constant(foreground, tf.int32)
        background = tf.constant(background, tf.int32)

        def draw(pool, count, seed_pair):
            if count == 0:
                return tf.zeros([0], tf.int32)
            picks = tf.random.stateless_uniform([count], seed_pair, 0, tf.shape(pool)[0], tf.int32)
            return tf.gather(pool, picks)

        def batch(step, key):
            seed_pair = tf.stack([key, tf.cast(step, tf.int64)])
            picked = tf.concat(
                [draw(foreground, num_fg, seed_pair), draw(background, num_bg, seed_pair + 1)], 0
            )
            warped = self._warp_padded(
                padded, tf.gather(boxes, picked), tf.gather(image_index, picked), sizes
            )
            return warped, tf.gather(head_labels, picked)

        keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        dataset = tf.data.Dataset.zip((tf.data.Dataset.range(num_batches), keys))
        return dataset.map(batch, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    def extract_features(self, regions, indices=None, region_batch_size=None):
        """``(pool5 [n,P], fc7 [n,F])`` NumPy features of ``regions`` (rows ``indices``)."""
        indices = np.arange(len(regions)) if indices is None else np.asarray(indices)
        chunk = int(region_batch_size or self.region_batch_size)
        padded = pad_for_warp(regions.images, self.fill_pixel)
        sizes = tf.constant(regions.image_sizes, tf.int32)
        features_fn = self._function("features")
        pool5 = np.zeros((len(indices), int(np.prod(self.pool5_shape))), np.float32)
        fc7 = np.zeros((len(indices), self.fc_dim), np.float32)
        for start in range(0, len(indices), chunk):
            rows = indices[start:start + chunk]
            p, f = features_fn(
                padded, tf.constant(regions.boxes[rows], tf.float32),
                tf.constant(regions.image_index[rows], tf.int32), sizes,
            )
            pool5[start:start + len(rows)] = p.numpy()
            fc7[start:start + len(rows)] = f.numpy()
        return pool5, fc7

    # ------------------------------------------------------------------ training stages
    def fine_tune(self, regions_dataset, epochs=1, optimizer=None, bn_statistics_batches=20,
                  **fit_kwargs):
        """Stage 1: fine-tune the CNN as a (C+1)-way softmax classifier of warped regions.

        Args:
            regions_dataset: batches ``(regions [n,S,S,3] raw pixels, labels [n])`` with labels
                ``0`` = background, ``c + 1`` = class ``c`` (see :meth:`fine_tune_dataset`).
            epochs: passes over the dataset.
            optimizer: default SGD, learning rate 0.001 (the paper's: 1/10 of pre-training),
                momentum 0.9, weight decay 5e-4.
            bn_statistics_batches: afterwards, batch norm layers that train (the ``tiny``
                backbone's; VGG16 has none, ResNet's are frozen) get moving statistics averaged
                over this many batches (:meth:`recompute_batch_norm_statistics`); ``0`` skips.
            **fit_kwargs: passed to ``fit`` (``verbose``, ``callbacks``, ``steps_per_epoch``…).
        Returns:
            the ``History`` (``loss``, ``accuracy``).
        """

        def forward(regions, training):
            _, fc7 = self.region_features(regions, training=training)
            return self.cls_score(fc7)

        parts = [self.backbone, self.fc_head, self.cls_score] + ([self.res5] if self.res5 is not None else [])
        stage = _Stage(parts, forward, name="rcnn_fine_tune")
        stage.compile(
            optimizer=optimizer or keras.optimizers.SGD(0.001, momentum=0.9, weight_decay=5e-4),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        history = stage.fit(regions_dataset, epochs=epochs, **fit_kwargs)
        if bn_statistics_batches:
            self.recompute_batch_norm_statistics(regions_dataset, bn_statistics_batches)
        return history

    def recompute_batch_norm_statistics(self, regions_dataset, num_batches=20):
        """Set the moving mean and variance of every trainable batch norm layer to the average
        of its batch statistics over ``num_batches`` batches of ``regions_dataset``.

        The exponential moving averages lag far behind after a short fine-tuning from scratch
        (with momentum 0.99, 150 steps leave 22 % of the initial statistics), which wrecks
        inference-mode features; averaging afterwards fixes them (detectron2's "precise BN").
        Returns the number of batches used.
        """
        norms = [layer for model in (self.backbone, self.res5) if model is not None
                 for layer in model.layers
                 if isinstance(layer, layers.BatchNormalization) and layer.trainable]
        if not norms:
            return 0
        momenta = [layer.momentum for layer in norms]
        used = 0
        try:
            for used, (regions, _) in enumerate(regions_dataset.take(num_batches), start=1):
                for layer in norms:
                    layer.momentum = 1.0 - 1.0 / used  # running mean of the batch statistics
                self.region_features(regions, training=True)
        finally:
            for layer, momentum in zip(norms, momenta):
                layer.momentum = momentum
        return used

    def train_svms(self, regions, rounds=3, svm_c=1e-3, negative_iou=0.3, positive_weight=2.0,
                   initial_negatives=1000, hard_negatives_per_round=2000, epochs_per_round=10,
                   batch_size=128, optimizer=None, seed=0, verbose=0):
        """Stage 2: per-class linear SVMs on fc7 features, with hard negative mining.

        The SVMs are ``self.svm`` (``Dense(C)``, one column per class), trained by ``fit`` with
        the hinge loss (:func:`svm_hinge_loss`) and ``l2 · ‖W‖²``, ``l2 = 1/(2·svm_c·n)`` for
        ``n`` training rows: the mean-loss form of liblinear's ``½‖w‖² + C·Σ hinge`` with the
        paper's ``C = 1e-3``. Features are scaled to a mean norm of 20 first (folded into the
        weights at the end).

        Mining: every class starts from ``initial_negatives`` random negatives; after each fit
        all regions are scored and up to ``hard_negatives_per_round`` of the highest-scoring
        uncached negatives above −1 − 1e-4 join the class's cache (:func:`mine_hard_negatives`);
        then the SVMs are fitted again, continuing from their weights. ``rounds`` is the number
        of mining rounds (stops early when none is found). Unlike the original code, easy
        negatives (below −1.05) are never evicted: the features are in memory anyway, and
        eviction can empty a class's cache, after which its SVM, fitted on positives alone,
        drifts to accept everything.

        Returns:
            ``{"histories": [History per fit], "mined": [[indices per class] per round] (into
            ``regions``, hardest first), "hard_negatives_added": [[count per class] per
            round], "cache_sizes": [[per class] per fit], "negative_cache": [K, C] bool}``.
        """
        labels = svm_labels(regions, negative_iou)
        positive, negative = labels > 0, labels < 0
        _, fc7 = self.extract_features(regions)
        scale = FEATURE_NORM / max(float(np.mean(np.linalg.norm(fc7, axis=1))), 1e-12)
        features = fc7 * scale
        rng = np.random.default_rng(seed)
        cached = np.zeros_like(negative)
        for c in range(self.num_classes):
            pool = np.flatnonzero(negative[:, c])
            cached[rng.choice(pool, min(len(pool), int(initial_negatives)), replace=False), c] = True
        self.svm.kernel.assign(tf.zeros_like(self.svm.kernel))
        self.svm.bias.assign(tf.zeros_like(self.svm.bias))
        log = {"histories": [], "mined": [], "hard_negatives_added": [], "cache_sizes": []}
        for round_index in range(int(rounds) + 1):
            if round_index > 0:
                scores = features @ self.svm.kernel.numpy() + self.svm.bias.numpy()
                mined = [
                    mine_hard_negatives(scores[:, c], negative[:, c], cached[:, c],
                                        hard_negatives_per_round)
                    for c in range(self.num_classes)
                ]
                added = [len(new) for new in mined]
                for c, new in enumerate(mined):
                    cached[new, c] = True
                log["mined"].append(mined)
                log["hard_negatives_added"].append(added)
                if verbose:
                    print(f"SVM round {round_index}: hard negatives added per class {added}")
                if sum(added) == 0:
                    break
            rows = np.flatnonzero(positive.any(axis=1) | cached.any(axis=1))
            targets = np.where(positive, 1, np.where(cached, -1, 0))[rows].astype(np.float32)
            stage = _Stage(
                [self.svm], lambda x, training: self.svm(x), l2=1.0 / (2.0 * svm_c * len(rows)),
                penalised=[self.svm.kernel], name="rcnn_svms",
            )
            stage.compile(optimizer=optimizer() if optimizer else keras.optimizers.Adam(1e-3),
                          loss=svm_hinge_loss(positive_weight))
            dataset = tf.data.Dataset.from_tensor_slices((features[rows], targets))
            dataset = dataset.shuffle(len(rows), seed=seed + round_index).batch(batch_size)
            log["histories"].append(stage.fit(dataset, epochs=epochs_per_round, verbose=verbose))
            log["cache_sizes"].append(cached.sum(axis=0).tolist())
        self.svm.kernel.assign(self.svm.kernel * scale)
        log["negative_cache"] = cached
        return log

    def train_box_regressors(self, regions, min_iou=0.6, ridge_lambda=1000.0, epochs=50,
                             batch_size=128, optimizer=None, seed=0, verbose=0):
        """Stage 3: class-specific ridge regression of box deltas from pool5 (appendix C).

        Pairs and targets from :func:`box_regression_targets` (IoU ≥ 0.6). ``self.bbox_regressor``
        (``Dense(4C)``, zero-initialised) is fitted by least squares on the pair's class outputs
        (:func:`class_specific_squared_error`) plus ``(ridge_lambda / n)·‖W‖²`` — the mean form
        of the paper's ``Σ‖t − Wφ‖² + λ‖W‖²`` with ``λ = 1000``, on pool5 features scaled to
        mean norm 20 (folded into the weights at the end).

        Args:
            optimizer: zero-argument callable returning an optimizer; default Adam(1e-4).
        Returns:
            the ``History``, or ``None`` when there is no pair.
        """
        indices, targets, classes = box_regression_targets(regions, min_iou, self.box_weights)
        self.bbox_regressor.kernel.assign(tf.zeros_like(self.bbox_regressor.kernel))
        self.bbox_regressor.bias.assign(tf.zeros_like(self.bbox_regressor.bias))
        if len(indices) == 0:
            return None
        pool5, _ = self.extract_features(regions, indices)
        scale = FEATURE_NORM / max(float(np.mean(np.linalg.norm(pool5, axis=1))), 1e-12)
        y = np.concatenate([targets, classes[:, None].astype(np.float32)], axis=1)
        stage = _Stage(
            [self.bbox_regressor], lambda x, training: self.bbox_regressor(x),
            l2=ridge_lambda / len(indices), penalised=[self.bbox_regressor.kernel],
            name="rcnn_box_regressors",
        )
        stage.compile(optimizer=optimizer() if optimizer else keras.optimizers.Adam(1e-4),
                      loss=class_specific_squared_error(self.num_classes))
        dataset = tf.data.Dataset.from_tensor_slices((pool5 * scale, y))
        dataset = dataset.shuffle(len(indices), seed=seed).batch(batch_size)
        history = stage.fit(dataset, epochs=epochs, verbose=verbose)
        self.bbox_regressor.kernel.assign(self.bbox_regressor.kernel * scale)
        return history

    # ------------------------------------------------------------------ config
    def export(self, filepath, format="tf_saved_model", verbose=True, input_type="image_tensor", **kwargs):
        """Write a SavedModel for TF Serving (Keras 3's export entry point): images and their
        selective-search ``proposals [B,R,4]`` (computed by the client, e.g. with
        :meth:`propose`) in, detections out; see :func:`rcnn_zoo.export.export_saved_model`."""
        if format != "tf_saved_model":
            raise ValueError(f"rcnn_zoo detectors export format 'tf_saved_model' only, got {format!r}")
        return export_saved_model(self, filepath, input_type=input_type, verbose=verbose, **kwargs)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
            "num_classes": self.num_classes,
            "backbone": self.backbone_name,
            "backbone_weights": None,  # weights travel with the saved model, not re-downloaded
            "classifier": self.classifier,
            "warp_size": self.warp_size,
            "context_padding": self.context_padding,
            "bounding_box_format": self.bounding_box_format,
            "class_names": self.class_names,
            "score_threshold": self.score_threshold,
            "nms_threshold": self.nms_threshold,
            "max_detections": self.max_detections,
            "fc_dim": self.fc_dim,
            "fc_dropout": self.fc_dropout,
            "proposal_mode": self.proposal_mode,
            "max_proposals": self.max_proposals,
            "region_batch_size": self.region_batch_size,
            "box_weights": list(self.box_weights),
        }
