"""Detection metrics: Pascal VOC AP (``voc``), COCO AP via pycocotools (``coco``), a Keras
callback that logs mAP during ``fit`` (``callback``), and a whole-dataset evaluation with its AP
table (``report``)."""

from rcnn_zoo.evaluation.callback import (
    METRICS,
    MeanAveragePrecisionCallback,
    evaluate_detections,
    predict_detections,
)
from rcnn_zoo.evaluation.coco import COCO_STAT_NAMES, coco_evaluate, coco_results
from rcnn_zoo.evaluation.report import evaluate_model, evaluation_batches, format_ap_table
from rcnn_zoo.evaluation.voc import voc_ap, voc_ap_per_class

__all__ = [
    "voc_ap",
    "voc_ap_per_class",
    "coco_evaluate",
    "coco_results",
    "COCO_STAT_NAMES",
    "MeanAveragePrecisionCallback",
    "predict_detections",
    "evaluate_detections",
    "evaluate_model",
    "evaluation_batches",
    "format_ap_table",
    "METRICS",
]
