"""Evaluating a detector on a whole dataset (``rcnn-zoo evaluate``): per-class AP and mAP for
the VOC and COCO metrics, and the table printed from them.

Shape shorthand: ``C`` classes. Predictions are made one original image at a time
(:func:`rcnn_zoo.data.evaluation_dataset`) and compared in original pixels. Detectors that score
proposals computed outside the network (Fast R-CNN, R-CNN) get each image's selective search
proposals with the batch (:func:`evaluation_batches`).
"""

import math

import numpy as np
import tensorflow as tf

from rcnn_zoo.data.training_pipeline import evaluation_dataset
from rcnn_zoo.errors import UsageError
from rcnn_zoo.evaluation.callback import METRICS, evaluate_detections, predict_detections
from rcnn_zoo.evaluation.coco import coco_evaluate
from rcnn_zoo.inference import boxes_in_model_format, image_proposals, needs_proposals
from rcnn_zoo.proposals import pad_proposals
from rcnn_zoo.utils import progress

__all__ = ["evaluate_model", "evaluation_batches", "format_ap_table"]


def evaluation_batches(model, dataset, proposal_cache=None, verbose=1):
    """The batches :func:`rcnn_zoo.evaluation.predict_detections` reads for ``model``: one
    original image each (:func:`rcnn_zoo.data.evaluation_dataset`), and for detectors that
    score external proposals (Fast R-CNN, R-CNN) its selective search proposals as
    ``inputs["proposals"]`` ``[1, R, 4]`` (the model's box format, original pixels, zero padded).

    ``proposal_cache``: folder of the proposals' on-disk cache (:func:`rcnn_zoo.inference.
    image_proposals`), or None. ``verbose``: what selective search does, with a progress bar.
    """
    batches = evaluation_dataset(dataset)
    if not needs_proposals(model):
        return batches
    records = dataset.records
    found = image_proposals(model, [r.image_path for r in records], cache_dir=proposal_cache, verbose=verbose)
    table = tf.constant(pad_proposals([boxes_in_model_format(model, boxes, r.height, r.width)
                                       for boxes, r in zip(found, records)]))

    def attach(inputs, targets):
        return {**inputs, "proposals": tf.gather(table, targets["image_id"])}, targets

    return batches.map(attach)


def evaluate_model(model, dataset, metrics=("voc",), iou_threshold=0.5, verbose=1, proposal_cache=None):
    """Predict on every image of ``dataset`` and compute the requested metrics.

    Args:
        model: a detector; its labels must follow ``dataset.class_names``.
        dataset: :class:`rcnn_zoo.data.DetectionDataset`.
        metrics: any of ``"voc"`` (all-points AP at IoU > ``iou_threshold``), ``"voc07"``
            (11-point) and ``"coco"`` (AP@[.50:.95] with COCO areas and category ids).
        verbose: 1 shows a progress bar, 0 nothing.
        proposal_cache: for detectors that take selective search proposals, the folder of
            their on-disk cache (see :func:`evaluation_batches`); None computes them afresh.

    Returns:
        ``{metric: {"mAP": float, "per_class_AP": [C], ...}}`` plus ``"num_images"``,
        ``"num_objects"`` (per class, non-difficult), ``"class_names"`` and
        ``"iou_threshold"``.
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise UsageError(f"unknown metric(s) {unknown}; choose from {', '.join(METRICS)}")
    batches = progress(evaluation_batches(model, dataset, proposal_cache, verbose), len(dataset), verbose=verbose)
    detections, ground_truths, ids = predict_detections(model, batches)
    results = {}
    for metric in metrics:
        if metric == "coco":
            truths = dataset.ground_truths(with_areas=True)
            stats = coco_evaluate(
                detections, [truths[i] for i in ids], dataset.num_classes,
                image_ids=[dataset.records[i].image_id for i in ids] if dataset.category_ids else None,
                category_ids=dataset.category_ids, class_names=dataset.class_names, per_class=True,
            )
            results[metric] = {"mAP": stats["AP"], **stats}
        else:
            results[metric] = evaluate_detections(detections, ground_truths, dataset.num_classes,
                                                  metric, iou_threshold)
        results[metric]["per_class_AP"] = [float(v) for v in np.asarray(results[metric]["per_class_AP"])]
        results[metric]["mAP"] = float(results[metric]["mAP"])
    counts = dataset.class_counts(include_difficult=False)
    results.update(num_images=len(dataset), num_objects=counts, class_names=list(dataset.class_names),
                   iou_threshold=iou_threshold)
    return results


_METRIC_TITLES = {"voc": "AP@{iou} (VOC)", "voc07": "AP@{iou} (VOC07 11pt)", "coco": "AP@[.5:.95] (COCO)"}


def format_ap_table(results):
    """The per-class AP table (and mAP line) of :func:`evaluate_model` results, as text."""
    metrics = [m for m in METRICS if m in results]
    names = results["class_names"]
    titles = [_METRIC_TITLES[m].format(iou=results.get("iou_threshold", 0.5)) for m in metrics]
    name_width = max([len("class")] + [len(str(n)) for n in names] + [len("mAP")])
    widths = [max(len(t), 8) for t in titles]
    header = f"{'class':<{name_width}}  {'objects':>7}  " + "  ".join(f"{t:>{w}}" for t, w in zip(titles, widths))
    lines = [header, "-" * len(header)]

    def cell(value, w):
        return f"{'n/a':>{w}}" if value is None or not math.isfinite(value) else f"{value:>{w}.4f}"

    for c, name in enumerate(names):
        count = results["num_objects"].get(name, 0)
        values = [results[m]["per_class_AP"][c] for m in metrics]
        lines.append(f"{name:<{name_width}}  {count:>7}  " + "  ".join(cell(v, w) for v, w in zip(values, widths)))
    lines.append("-" * len(header))
    total = sum(results["num_objects"].values())
    lines.append(f"{'mAP':<{name_width}}  {total:>7}  "
                 + "  ".join(cell(results[m]["mAP"], w) for m, w in zip(metrics, widths)))
    if "coco" in results:
        coco = results["coco"]
        lines.append("COCO: " + ", ".join(f"{k}={coco[k]:.4f}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")
                                          if k in coco and coco[k] is not None and math.isfinite(coco[k])))
    return "\n".join(lines)
