"""Multi-task losses of Faster R-CNN (eq. 1) and Fast R-CNN (eq. 1) as ``keras.losses.Loss``.

Each loss returns a float32 scalar already normalised the way torchvision does (RPN: over the
sampled anchors of the batch; head: over the sampled RoIs of the batch), finite for batches with
no positive or no sampled entry, and casts its predictions to float32 (mixed precision).

``y_true`` can be the dicts returned by :mod:`rcnn_zoo.targets` as they are::

    rpn = rpn_targets(anchors, gt_boxes, gt_labels)
    RPNObjectnessLoss()(rpn, objectness_logits)          # [B, A] logits
    SmoothL1BoxLoss(beta=1 / 9)(rpn, rpn_deltas)          # [B, A, 4]
    roi = sample_rois(proposals, valid, gt_boxes, gt_labels)
    DetectionClassificationLoss()(roi, class_logits)      # [B, S, C + 1]
    DetectionBoxLoss()(roi, box_deltas)                   # [B, S, C + 1, 4]
"""

from rcnn_zoo.losses.detection_box_loss import DetectionBoxLoss
from rcnn_zoo.losses.detection_classification_loss import DetectionClassificationLoss
from rcnn_zoo.losses.rpn_objectness_loss import RPNObjectnessLoss
from rcnn_zoo.losses.smooth_l1_box_loss import SmoothL1BoxLoss, smooth_l1
from rcnn_zoo.losses.svm_hinge_loss import SVMHingeLoss

__all__ = [
    "RPNObjectnessLoss",
    "SmoothL1BoxLoss",
    "DetectionClassificationLoss",
    "DetectionBoxLoss",
    "smooth_l1",
    "SVMHingeLoss",
]
