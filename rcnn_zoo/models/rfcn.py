"""R-FCN (Dai, Li, He, Sun 2016, "R-FCN: Object Detection via Region-based Fully Convolutional
Networks"): Faster R-CNN with a position-sensitive, fully convolutional second stage.

    images → backbone → conv4 → RegionProposalNetwork → proposals
                      → conv5 (dilated, stride 16) → PositionSensitiveRoIHead
                        (k²(C+1) score maps, 4k² box maps → PS-RoI pooling → vote) → detections

Shapes: B images, R RoIs per image, k group size, C foreground classes.
"""

import keras

from rcnn_zoo.backbones import build_backbone
from rcnn_zoo.backbones.resnet import build_resnet_dilated_c5
from rcnn_zoo.heads.rfcn import PositionSensitiveRoIHead
from rcnn_zoo.models.faster_rcnn import FasterRCNN

# R-FCN's own keywords for its head's arguments (kept from the first release's configs).
HEAD_KEYWORDS = {"group_size": "k", "reduced_channels": "reduced_channels", "ohem": "ohem"}


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class RFCN(FasterRCNN):
    """R-FCN as a ``keras.Model`` with the same interface as :class:`FasterRCNN`.

    Backbones: ``"resnet101"`` (the paper's, default), ``"resnet50"`` — conv5 dilated to stride
    16 — or ``"tiny"`` for tests and CPU training. Head keywords: ``k`` (group size, 7),
    ``ohem`` (train on the ``roi_batch_size_per_image`` = 128 hardest of all proposals; ``False``
    samples at 25 % foreground like Faster R-CNN), ``reduced_channels`` (the 1×1 conv before the
    maps: 1024, or 4× the backbone's channels when it has fewer), and the ``roi_*`` sampling
    keywords of :class:`~rcnn_zoo.heads.roi_heads.RoIHead`. RoI pooling and fc-head keywords
    (``roi_pooling``, ``roi_head_dim``, …) do not exist here and are refused.
    """

    PRESET_DETECTOR = "RFCN"
    DEFAULT_BACKBONE = "resnet101"
    ROI_HEAD = PositionSensitiveRoIHead
    PAPER_DEFAULTS = {"reduced_channels": None}  # None: from the backbone's channels
    # R-FCN §4.1: 300 RoIs per image in training and test and OHEM keeps 128, whatever the
    # backbone's own defaults (the per-RoI cost of R-FCN is small).
    OVER_BACKBONE_DEFAULTS = {
        "rpn_post_nms_top_n_train": 300,
        "rpn_post_nms_top_n_test": 300,
        "roi_batch_size_per_image": 128,
    }

    @staticmethod
    def roi_keyword(argument):
        return HEAD_KEYWORDS.get(argument) or f"roi_{argument}"

    @staticmethod
    def build_backbone_spec(name, weights):
        if name in ("resnet50", "resnet101"):
            return build_resnet_dilated_c5(name, weights)
        if name == "tiny":
            return build_backbone(name, weights=weights)
        raise ValueError(f"R-FCN backbone must be 'resnet50', 'resnet101' or 'tiny', got {name!r}")

    def build_roi_heads(self, spec, hp):
        index = spec.feature_names.index(self.roi_feature_names[0])
        channels = spec.channels[index]
        head = self.roi_arguments(hp)
        if head.get("reduced_channels") is None:
            head["reduced_channels"] = 1024 if channels >= 1024 else 4 * channels
        return PositionSensitiveRoIHead(self.num_classes, spec.strides[index], channels, **head, name="roi_heads")
