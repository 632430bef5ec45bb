"""Detectors: Faster R-CNN (and, sharing its parts, R-FCN, Fast R-CNN and R-CNN)."""

from rcnn_zoo.models.detector import TwoStageDetector
from rcnn_zoo.models.fast_rcnn import FastRCNN
from rcnn_zoo.models.faster_rcnn import FasterRCNN
from rcnn_zoo.models.rcnn import RCNN
from rcnn_zoo.models.registry import DETECTORS, detector_name, get_detector
from rcnn_zoo.models.rfcn import RFCN

__all__ = ["TwoStageDetector", "RCNN", "FastRCNN", "FasterRCNN", "RFCN", "DETECTORS", "detector_name",
           "get_detector"]
