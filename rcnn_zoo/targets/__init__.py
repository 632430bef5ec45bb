"""Training-target assignment with static shapes: IoU matching, balanced sampling, RPN and RoI
targets (Faster R-CNN §3.1.2–3.1.3, Fast R-CNN §2.3).

Ground truth comes as ``gt_boxes [B, G, 4]`` float xyxy pixels and ``gt_labels [B, G]`` int,
classes ``0 … C-1`` and ``-1`` for padding. Every function is pure TensorFlow, batched and works
inside ``tf.function``; images without ground truth give all-negative targets.
"""

from rcnn_zoo.targets.matcher import match
from rcnn_zoo.targets.ohem import per_roi_loss, select_hard_examples
from rcnn_zoo.targets.roi_targets import sample_rois
from rcnn_zoo.targets.rpn_targets import rpn_targets
from rcnn_zoo.targets.sampler import sample_balanced

__all__ = [
    "match",
    "sample_balanced",
    "rpn_targets",
    "sample_rois",
    "per_roi_loss",
    "select_hard_examples",
]
