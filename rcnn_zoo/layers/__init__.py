"""Keras layers of two-stage detectors: anchors, proposals and RoI feature extraction.

Every layer is registered for serialisation under the ``rcnn_zoo`` package.
"""

from rcnn_zoo.layers.anchor_generator import AnchorGenerator, concat_levels
from rcnn_zoo.layers.proposal_layer import ProposalLayer
from rcnn_zoo.layers.ps_roi_pooling import PSRoIPooling
from rcnn_zoo.layers.roi_align import RoIAlign
from rcnn_zoo.layers.roi_pooling import RoIPooling

__all__ = [
    "AnchorGenerator",
    "concat_levels",
    "ProposalLayer",
    "RoIPooling",
    "RoIAlign",
    "PSRoIPooling",
]
