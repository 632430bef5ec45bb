"""Mean average precision on a validation set during ``fit``, as ``logs["val_mAP"]``.

Shape shorthand: ``B`` images in a batch, ``G`` ground truth boxes per image (padded), ``D``
detections per image (padded).

The detector's prediction is the dict ``{"boxes": [B, D, 4] xyxy pixels of the input image,
"scores": [B, D], "labels": [B, D] int in 0 … C−1, "num_detections": [B]}``; validation
batches are ``(images, {"boxes": [B, G, 4], "labels": [B, G] (−1 = padding), ...})`` as made by
``rcnn_zoo.data.make_tf_dataset`` — with ``"difficult"`` (``training=False``) difficult/crowd
objects are ignored, with ``"scale"`` (``return_metadata=True``) boxes are mapped back to
original image pixels before evaluating.
"""

import numpy as np

import keras

from rcnn_zoo.evaluation.coco import coco_evaluate
from rcnn_zoo.evaluation.voc import voc_ap_per_class

__all__ = ["MeanAveragePrecisionCallback", "predict_detections", "evaluate_detections"]

METRICS = ("voc", "voc07", "coco")


def _numpy(value):
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def predict_detections(model, dataset, max_batches=None):
    """Run ``model.predict_on_batch`` over ``dataset`` and collect per-image results.

    Args:
        model: a detector returning the prediction dict of the module docstring.
        dataset: iterable of ``(images, targets)`` batches (a ``tf.data.Dataset``).
        max_batches: stop after this many batches.

    Returns:
        ``(detections, ground_truths, image_ids)``: per image ``(boxes [n, 4], scores [n],
        labels [n])`` (the first ``num_detections`` of each image, labels ≥ 0) and ``(boxes,
        labels, difficult)`` without padding, both in original pixels when the targets carry
        ``"scale"`` (else in input pixels); ``image_ids`` are ``targets["image_id"]`` if present
        (record indices), else running indices.
    """
    detections, ground_truths, image_ids = [], [], []
    for step, batch in enumerate(dataset):
        if max_batches is not None and step >= max_batches:
            break
        images, targets = batch[0], batch[1]
        outputs = model.predict_on_batch(images)
        boxes = _numpy(outputs["boxes"])
        scores = _numpy(outputs["scores"])
        labels = _numpy(outputs["labels"])
        count = (
            _numpy(outputs["num_detections"])
            if "num_detections" in outputs
            else np.full(len(boxes), boxes.shape[1])
        )
        gt_boxes = _numpy(targets["boxes"])
        gt_labels = _numpy(targets["labels"])
        if "difficult" in targets:
            gt_difficult = _numpy(targets["difficult"])
        else:
            gt_difficult = np.zeros_like(gt_labels, bool)
        scale = _numpy(targets["scale"]) if "scale" in targets else None
        ids = _numpy(targets["image_id"]) if "image_id" in targets else None
        for b in range(len(gt_labels)):
            n = int(count[b])
            d_boxes = boxes[b, :n].astype(np.float64)
            d_scores, d_labels = scores[b, :n], labels[b, :n].astype(np.int64)
            valid = d_labels >= 0
            g_valid = gt_labels[b] >= 0
            g_boxes = gt_boxes[b][g_valid].astype(np.float64)
            if scale is not None:
                factor = np.array([scale[b, 1], scale[b, 0], scale[b, 1], scale[b, 0]], np.float64)
                d_boxes, g_boxes = d_boxes / factor, g_boxes / factor
            detections.append((d_boxes[valid], d_scores[valid], d_labels[valid]))
            g_labels = gt_labels[b][g_valid].astype(np.int64)
            ground_truths.append((g_boxes, g_labels, gt_difficult[b][g_valid].astype(bool)))
            image_ids.append(int(ids[b]) if ids is not None else len(image_ids))
    return detections, ground_truths, image_ids


def evaluate_detections(
    detections, ground_truths, num_classes, metric="voc", iou_threshold=0.5, pixel_offset=0
):
    """``{"mAP": float, "per_class_AP": [C], ...}`` for one of ``"voc"`` (all-points AP at
    IoU > ``iou_threshold``), ``"voc07"`` (11-point) or ``"coco"`` (``mAP`` = AP@[.50:.95],
    plus the other COCO stats)."""
    if metric in ("voc", "voc07"):
        ap, mean = voc_ap_per_class(
            detections,
            ground_truths,
            num_classes,
            iou_threshold=iou_threshold,
            use_07_metric=metric == "voc07",
            pixel_offset=pixel_offset,
        )
        return {"mAP": mean, "per_class_AP": ap}
    if metric == "coco":
        stats = coco_evaluate(detections, ground_truths, num_classes, per_class=True)
        return {"mAP": stats["AP"], **stats}
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


class MeanAveragePrecisionCallback(keras.callbacks.Callback):
    """Evaluate mAP on ``validation_data`` every ``every_n_epochs`` epochs and log it.

    List it *before* callbacks that read the value (``ModelCheckpoint(monitor="val_mAP",
    mode="max")``, ``EarlyStopping``): Keras passes one ``logs`` dict along the list, and
    this callback adds its keys in ``on_epoch_end``. On epochs it skips, the keys are absent.

    Args:
        validation_data: ``tf.data.Dataset`` (or any iterable) of ``(images, targets)``
            batches, see the module docstring; or a ``rcnn_zoo.data.DetectionDataset``, turned
            into batches of ``batch_size`` with ``to_tf_dataset(return_metadata=True)`` (no
            resizing: the detectors resize internally).
        every_n_epochs: evaluate after epochs ``n, 2n, …`` (1-based).
        metric: ``"voc"`` (all-points AP, IoU > 0.5), ``"voc07"`` (11-point) or ``"coco"``
            (AP@[.50:.95]; also logs ``val_AP50``, ``val_AP75``).
        class_names: names used for per-class keys; gives ``num_classes`` if that is None.
        num_classes: ``C``; default: ``len(class_names)``, else ``model.num_classes``, else
            one more than the largest label seen.
        per_class: also log ``val_AP_<class name or index>`` for every class (the prefix
            follows ``log_name``).
        iou_threshold, pixel_offset: for the VOC metrics (see ``rcnn_zoo.evaluation.voc``).
        max_batches: evaluate on at most this many batches.
        log_name: key of the mean (``"val_mAP"``).
        batch_size: batch size when ``validation_data`` is a ``DetectionDataset``.
        verbose: print the result after each evaluation.

    After an evaluation ``self.last_result`` holds the full result dict.
    """

    def __init__(
        self,
        validation_data,
        every_n_epochs=1,
        metric="voc",
        class_names=None,
        num_classes=None,
        per_class=False,
        iou_threshold=0.5,
        pixel_offset=0,
        max_batches=None,
        log_name="val_mAP",
        batch_size=2,
        verbose=0,
    ):
        super().__init__()
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be ≥ 1, got {every_n_epochs}")
        if hasattr(validation_data, "to_tf_dataset"):
            if class_names is None:
                class_names = validation_data.class_names
            validation_data = validation_data.to_tf_dataset(
                batch_size=batch_size, return_metadata=True
            )
        self.validation_data = validation_data
        self.every_n_epochs = int(every_n_epochs)
        self.metric = metric
        self.class_names = None if class_names is None else list(class_names)
        self.num_classes = num_classes
        self.per_class = per_class
        self.iou_threshold = iou_threshold
        self.pixel_offset = pixel_offset
        self.max_batches = max_batches
        self.log_name = log_name
        self.verbose = verbose
        self.last_result = None

    def _num_classes(self, detections, ground_truths):
        if self.num_classes is not None:
            return int(self.num_classes)
        if self.class_names is not None:
            return len(self.class_names)
        if getattr(self.model, "num_classes", None) is not None:
            return int(self.model.num_classes)
        seen = [np.max(x[2], initial=-1) for x in detections]
        seen += [np.max(g[1], initial=-1) for g in ground_truths]
        return int(max(seen, default=-1)) + 1

    def evaluate(self):
        """Predict on the validation data and return the result dict (also ``last_result``)."""
        detections, ground_truths, _ = predict_detections(
            self.model, self.validation_data, self.max_batches
        )
        result = evaluate_detections(
            detections,
            ground_truths,
            self._num_classes(detections, ground_truths),
            self.metric,
            self.iou_threshold,
            self.pixel_offset,
        )
        self.last_result = result
        return result

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        result = self.evaluate()
        values = {self.log_name: result["mAP"]}
        base = self.log_name[:-3] if self.log_name.endswith("mAP") else self.log_name + "_"
        if self.metric == "coco":
            values[base + "AP50"] = result["AP50"]
            values[base + "AP75"] = result["AP75"]
        if self.per_class:
            for c, ap in enumerate(result["per_class_AP"]):
                name = self.class_names[c] if self.class_names is not None else str(c)
                values[f"{base}AP_{name}"] = float(ap)
        if logs is not None:
            logs.update(values)
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: " + ", ".join(f"{k}={v:.4f}" for k, v in values.items()))
