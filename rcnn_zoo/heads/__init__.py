"""Prediction heads: the RPN (Faster R-CNN), the Fast R-CNN box head, and RoI poolers."""

from rcnn_zoo.heads.conv_fc import ConvFCBoxHead
from rcnn_zoo.heads.fast_rcnn import BoxPredictor, FCBoxHead, Res5BoxHead
from rcnn_zoo.heads.poolers import MultiLevelRoIAlign, assign_fpn_levels
from rcnn_zoo.heads.rcnn_head import RCNNHead
from rcnn_zoo.heads.rpn import RPNHead

__all__ = [
    "RPNHead",
    "FCBoxHead",
    "ConvFCBoxHead",
    "Res5BoxHead",
    "BoxPredictor",
    "MultiLevelRoIAlign",
    "assign_fpn_levels",
    "RCNNHead",
]
