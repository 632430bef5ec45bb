"""Detection datasets: synthetic shapes (``rcnn_zoo.data.synthetic``) and dataset readers.

Readers (``read_voc``, ``read_coco``) return a :class:`DetectionDataset` of
:class:`DetectionRecord` s (boxes float32 xyxy continuous pixels, labels ``0 … C−1``);
``dataset.to_tf_dataset(...)`` / :func:`make_tf_dataset` build the ``tf.data`` pipeline, one
pass (``pipeline.detection_batches``) over the stages of ``stages`` and ``augment``.
:func:`load_dataset` reads a dataset by format (what ``rcnn-zoo`` does); :func:`training_dataset`
(augmented, resized by the detector's rule) and :func:`evaluation_dataset` are the input
pipelines of ``rcnn-zoo train`` and ``evaluate``.
"""

from rcnn_zoo.data.analysis import analyze, format_analysis
from rcnn_zoo.data.coco import read_coco
from rcnn_zoo.data.loading import FORMATS, load_dataset
from rcnn_zoo.data.pipeline import (
    DatasetError,
    DatasetWarning,
    DetectionDataset,
    DetectionRecord,
    make_tf_dataset,
    resized_size,
)
from rcnn_zoo.data.training_pipeline import evaluation_dataset, steps_per_epoch, training_dataset
from rcnn_zoo.data.voc import (
    VOC_CLASSES,
    continuous_to_voc,
    read_voc,
    voc_to_continuous,
)

__all__ = [
    "analyze",
    "format_analysis",
    "DatasetError",
    "DatasetWarning",
    "DetectionDataset",
    "DetectionRecord",
    "make_tf_dataset",
    "resized_size",
    "read_voc",
    "read_coco",
    "VOC_CLASSES",
    "voc_to_continuous",
    "continuous_to_voc",
    "FORMATS",
    "load_dataset",
    "training_dataset",
    "steps_per_epoch",
    "evaluation_dataset",
]
