"""Faster R-CNN (Ren, He, Girshick, Sun 2015, "Towards Real-Time Object Detection with Region
Proposal Networks"), trained end to end by approximate joint training.

    images → backbone ─→ RegionProposalNetwork (anchors, objectness, deltas) → proposals
                     └─→ BoxRoIHead (RoIPool / RoIAlign / multi-level RoIAlign → box head
                                     → class scores, class-specific deltas) → detections

Shapes: B images, P proposals per image, C foreground classes, D = max_detections.
"""

import keras

from rcnn_zoo.heads.roi_heads import BoxRoIHead
from rcnn_zoo.heads.rpn import RegionProposalNetwork
from rcnn_zoo.models.detector import TwoStageDetector
from rcnn_zoo.models.inputs import unpack_images


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class FasterRCNN(TwoStageDetector):
    """Faster R-CNN as a ``keras.Model``: ``compile()``, ``fit()``, ``predict()``, ``save()``.

    ``num_classes`` counts foreground classes only; labels are ``0 … num_classes−1`` and the
    background class is internal (torchvision's models count background as class 0 — do not add
    one here).

    Inputs: images ``[B, H, W, 3]`` raw RGB pixels (uint8 or float 0..255, padded bottom/right),
    a ragged batch, or ``{"images", "image_sizes"}``. Training targets: ``{"boxes": [B, G, 4],
    "labels": [B, G]}`` padded with label −1, boxes in ``bounding_box_format`` and image pixels.
    ``predict`` returns ``{"boxes" [B,D,4], "scores" [B,D], "labels" [B,D] (−1 padding),
    "num_detections" [B]}`` in the same format and pixels.

    ``FasterRCNN(weights="coco")`` (or ``FasterRCNN.from_preset("coco")``) builds the registered
    model exactly — class count, backbone, every pre/post-processing setting, class names — and
    loads it; arguments passed with it override the preset (``num_classes=5``: fine-tuning start).

    Arguments as :class:`~rcnn_zoo.models.detector.TwoStageDetector`; backbones ``"vgg16"``,
    ``"resnet50"``, ``"resnet101"`` (C4: conv5 is the box head), ``"resnet50_fpn"`` (default),
    ``"mobilenet_v3_large_fpn"``, ``"tiny"``, ``"tiny_fpn"`` (from scratch on a CPU; RoIs of
    small objects pooled from stride 4). Hyperparameters: ``anchor_*`` / ``rpn_*`` of
    :class:`~rcnn_zoo.heads.RegionProposalNetwork`, ``roi_*`` of
    :class:`~rcnn_zoo.heads.roi_heads.BoxRoIHead` (``roi_pooling="align"``, ``roi_head_dim``, …).
    """

    LOSS_NAMES = ("rpn_cls", "rpn_box", "cls", "box")
    PRESET_DETECTOR = "FasterRCNN"
    DEFAULT_BACKBONE = "resnet50_fpn"
    RPN = RegionProposalNetwork
    ROI_HEAD = BoxRoIHead
    # Faster R-CNN §3.3 / torchvision, where they differ from Fast R-CNN's RoI head.
    PAPER_DEFAULTS = {
        "roi_head_dim": 1024,
        "roi_negative_iou_low": 0.0,
        "roi_batch_size_per_image": 512,
    }

    def build_stages(self, spec, hp):
        names, strides, channels = spec.rpn_levels()
        self.rpn_feature_names = names
        self.rpn = self.RPN(strides, channels[0], **self.rpn_arguments(hp), name="rpn")
        self.roi_feature_names = self.roi_levels(spec, hp)
        self.roi_heads = self.build_roi_heads(spec, hp)

    def roi_levels(self, spec, hp):
        """Names of the maps the RoI head pools (FPN: P2–P5, not P6; otherwise the first)."""
        return tuple(hp["roi_levels"]) if hp["roi_levels"] is not None else spec.feature_names[:1]

    def build_roi_heads(self, spec, hp):
        index = [spec.feature_names.index(name) for name in self.roi_feature_names]
        return BoxRoIHead(
            self.num_classes, [spec.strides[i] for i in index], spec.channels[index[0]],
            res5=spec.res5 if spec.roi_head == "res5" else None, **self.roi_arguments(hp), name="roi_heads",
        )

    def call(self, images, training=False, ground_truth=None):
        """Detections; with ``ground_truth`` (training/evaluation), the outputs the losses need."""
        images, image_sizes = unpack_images(images)
        features, normalised, resized_sizes, scale = self.features(images, image_sizes, training)
        first = self.rpn(
            [features[name] for name in self.rpn_feature_names],
            batch_shape=keras.ops.shape(normalised)[1:3],
            # Each image's resized size (proposals are clipped to it) and scale (py-faster-rcnn
            # measures rpn_min_size in original-image pixels).
            image_info=keras.ops.concatenate([keras.ops.cast(resized_sizes, "float32"), scale[:, :1]], axis=1),
            training=training,
        )
        gt = self.ground_truth(ground_truth, image_sizes, resized_sizes)
        second = self.roi_heads.forward(
            [features[name] for name in self.roi_feature_names],
            first["proposals"], first["proposal_valid"], gt, training=training,
        )
        if gt is None:
            return self.detections(second, image_sizes, resized_sizes)
        return {**first, **second, "gt_boxes": gt[0], "gt_labels": gt[1]}
