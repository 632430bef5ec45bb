"""Training-target assignment with static shapes: IoU matching, balanced sampling, RPN and RoI
targets (Faster R-CNN §3.1.2–3.1.3, Fast R-CNN §2.3).

Ground truth comes as ``gt_boxes [B, G, 4]`` float xyxy pixels and ``gt_labels [B, G]`` int,
classes ``0 … C-1`` and ``-1`` for padding. Every function is pure TensorFlow, batched and works
inside ``tf.function``; images without ground truth give all-negative targets.
R-CNN's region sets and SVM training sets (``regions``, ``svm_targets``) are NumPy over a whole
training set instead.
"""

from rcnn_zoo.targets.matcher import match
from rcnn_zoo.targets.ohem import per_roi_loss, select_hard_examples
from rcnn_zoo.targets.regions import RegionSet, box_regression_targets, build_region_set
from rcnn_zoo.targets.roi_targets import sample_rois
from rcnn_zoo.targets.rpn_targets import rpn_targets
from rcnn_zoo.targets.sampler import sample_balanced
from rcnn_zoo.targets.svm_targets import mine_hard_negatives, svm_labels

__all__ = [
    "match",
    "sample_balanced",
    "rpn_targets",
    "sample_rois",
    "per_roi_loss",
    "select_hard_examples",
    "RegionSet",
    "build_region_set",
    "box_regression_targets",
    "svm_labels",
    "mine_hard_negatives",
]
