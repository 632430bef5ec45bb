"""R-FCN (Dai, Li, He, Sun 2016, "R-FCN: Object Detection via Region-based Fully Convolutional
Networks").

    images → backbone → conv4 → RPN → proposals
                      → conv5 (dilated, stride 16) → 1×1 conv (1024) → k²(C+1) score maps
                                                                     → 4k² box maps
           → PS-RoI pooling (k×k bins, bin (i, j) reads its own maps) → vote (average) → softmax

Every learnable layer is convolutional and shared by all RoIs: the per-RoI cost is the pooling
alone. Training optionally uses online hard example mining (OHEM, section 3.3): the loss of all
candidate RoIs is computed and only the ``roi_batch_size_per_image`` hardest are trained on.

Shapes: B images, R RoIs per image, k group size, C foreground classes.
"""

import keras
import tensorflow as tf
from keras import layers

from rcnn_zoo.backbones import build_backbone
from rcnn_zoo.backbones.resnet import build_resnet_dilated_c5
from rcnn_zoo.layers import PSRoIPooling
from rcnn_zoo.models.faster_rcnn import FasterRCNN
from rcnn_zoo.targets import per_roi_loss, sample_rois, select_hard_examples

RFCN_DEFAULTS = {
    # R-FCN paper section 4.1: 300 RoIs per image in training and test, OHEM keeps 128.
    "rpn_post_nms_top_n_train": 300,
    "rpn_post_nms_top_n_test": 300,
    "roi_batch_size_per_image": 128,
}


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class PositionSensitiveHead(layers.Layer):
    """Position-sensitive score and box maps plus PS-RoI pooling with average voting.

    ``call(features [B,H,W,C_in], rois [B,R,4])`` → ``(logits [B,R,C+1], deltas [B,R,4])``;
    box regression is class-agnostic (4k² maps), as in the paper.
    """

    def __init__(self, num_classes, group_size=7, reduced_channels=1024, spatial_scale=1.0 / 16, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.group_size = group_size
        self.reduced_channels = reduced_channels
        self.spatial_scale = spatial_scale
        k2 = group_size * group_size
        init = keras.initializers.RandomNormal(stddev=0.01)
        self.reduce = layers.Conv2D(reduced_channels, 1, activation="relu", kernel_initializer=init,
                                    dtype=self.dtype_policy, name="conv_new_1")
        self.score_maps = layers.Conv2D(k2 * (num_classes + 1), 1, kernel_initializer=init,
                                        dtype=self.dtype_policy, name="rfcn_cls")
        self.box_maps = layers.Conv2D(k2 * 4, 1, kernel_initializer=init,
                                      dtype=self.dtype_policy, name="rfcn_bbox")
        self.score_pool = PSRoIPooling(group_size, num_classes + 1, spatial_scale, name="ps_cls")
        self.box_pool = PSRoIPooling(group_size, 4, spatial_scale, name="ps_bbox")

    def build(self, input_shape):
        self.reduce.build((None, None, None, input_shape[-1]))
        self.score_maps.build((None, None, None, self.reduced_channels))
        self.box_maps.build((None, None, None, self.reduced_channels))
        self.built = True

    def call(self, features, rois):
        hidden = self.reduce(features)
        # Voting: the RoI's score for a class is the mean of its k×k position-sensitive bins.
        logits = tf.reduce_mean(tf.cast(self.score_pool(self.score_maps(hidden), rois), tf.float32), axis=(2, 3))
        deltas = tf.reduce_mean(tf.cast(self.box_pool(self.box_maps(hidden), rois), tf.float32), axis=(2, 3))
        return logits, deltas

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "group_size": self.group_size,
                "reduced_channels": self.reduced_channels,
                "spatial_scale": self.spatial_scale,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class RFCN(FasterRCNN):
    """R-FCN as a ``keras.Model`` with the same interface as :class:`FasterRCNN`.

    Args:
        num_classes: foreground classes (background is internal).
        backbone: ``"resnet101"`` (the paper's), ``"resnet50"`` — conv5 dilated to stride 16 — or
            ``"tiny"`` for tests and CPU training.
        k: group size of the position-sensitive maps (k×k bins; the paper's 7).
        ohem: train on the hardest ``roi_batch_size_per_image`` of all proposals per image (the
            paper's default); ``False`` samples RoIs at 25 % foreground like Faster R-CNN.
        reduced_channels: channels of the 1×1 conv before the score maps (1024 in the paper).
        Other keywords as :class:`FasterRCNN` (RPN and RoI sampling hyperparameters; defaults
        from the R-FCN paper: 300 proposals per image in training and test, OHEM keeps 128).
    """

    PRESET_DETECTOR = "RFCN"

    def __init__(self, num_classes=None, backbone="resnet101", k=7, ohem=True, reduced_channels=None, **kwargs):
        self.k = int(k)
        self.ohem = bool(ohem)
        self._reduced_channels_arg = reduced_channels
        for key, value in RFCN_DEFAULTS.items():
            kwargs.setdefault(key, value)
        super().__init__(num_classes=num_classes, backbone=backbone, **kwargs)

    @staticmethod
    def build_backbone_spec(name, weights):
        if name in ("resnet50", "resnet101"):
            return build_resnet_dilated_c5(name, weights)
        if name in ("tiny",):
            return build_backbone(name, weights=weights)
        raise ValueError(f"R-FCN backbone must be 'resnet50', 'resnet101' or 'tiny', got {name!r}")

    def _build_roi_head(self, spec, hp):
        self.roi_feature_indices = self._roi_feature_indices(spec, hp)
        self.roi_feature_names = tuple(spec.feature_names[i] for i in self.roi_feature_indices)
        index = self.roi_feature_indices[0]
        channels, stride = spec.channels[index], spec.strides[index]
        reduced = self._reduced_channels_arg or (1024 if channels >= 1024 else 4 * channels)
        self.ps_head = PositionSensitiveHead(self.num_classes, self.k, reduced, 1.0 / stride, name="ps_head")
        self.ps_head.build((None, None, None, channels))
        self.built = True

    def _roi_head(self, roi_levels, rois, training):
        return self.ps_head(roi_levels[0], rois)

    def _sample_training_rois(self, proposals, proposal_valid, gt_boxes, gt_labels):
        if not self.ohem:
            return super()._sample_training_rois(proposals, proposal_valid, gt_boxes, gt_labels)
        # OHEM: every proposal is a candidate (ground-truth boxes too, as long as they fit in the
        # static P slots: positives are taken first); the loss then picks the hardest.
        return sample_rois(
            proposals, proposal_valid, gt_boxes, gt_labels,
            num_samples=proposals.shape[1],
            positive_fraction=1.0,
            foreground_iou=self.hp["roi_positive_iou"],
            background_iou_high=self.hp["roi_negative_iou_high"],
            background_iou_low=self.hp["roi_negative_iou_low"],
            box_weights=self.hp["roi_box_weights"],
        )

    def compute_losses(self, y_pred):
        if self.ohem:
            targets = y_pred["roi_targets"]
            losses = per_roi_loss(targets["labels"], y_pred["class_logits"], targets["deltas"], y_pred["box_deltas"])
            hard = select_hard_examples(losses, targets["labels"], self.hp["roi_batch_size_per_image"])
            y_pred = dict(y_pred, roi_targets=dict(targets, labels=hard))
        return super().compute_losses(y_pred)

    def get_config(self):
        config = super().get_config()
        config.update({"k": self.k, "ohem": self.ohem, "reduced_channels": self._reduced_channels_arg})
        return config
