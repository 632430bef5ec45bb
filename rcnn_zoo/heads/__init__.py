"""The detectors' stages: the Region Proposal Network (Faster R-CNN), the RoI heads (Fast R-CNN's
box head, R-FCN's position-sensitive head), their layers, RoI poolers and post-processing."""

from rcnn_zoo.heads.conv_fc import ConvFCBoxHead
from rcnn_zoo.heads.fast_rcnn import BoxPredictor, FCBoxHead, Res5BoxHead
from rcnn_zoo.heads.poolers import MultiLevelRoIAlign, assign_fpn_levels
from rcnn_zoo.heads.rcnn_head import RCNNHead
from rcnn_zoo.heads.rfcn import PositionSensitiveRoIHead
from rcnn_zoo.heads.roi_heads import BoxRoIHead, RoIHead
from rcnn_zoo.heads.rpn import RegionProposalNetwork, RPNHead

__all__ = [
    "RegionProposalNetwork",
    "RoIHead",
    "BoxRoIHead",
    "PositionSensitiveRoIHead",
    "RPNHead",
    "FCBoxHead",
    "ConvFCBoxHead",
    "Res5BoxHead",
    "BoxPredictor",
    "MultiLevelRoIAlign",
    "assign_fpn_levels",
    "RCNNHead",
]
