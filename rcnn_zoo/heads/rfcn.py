"""R-FCN's position-sensitive RoI head (Dai, Li, He, Sun 2016, §2 and §3.3).

    conv5 features → 1×1 conv (1024) → k²(C+1) score maps → PS-RoI pooling (k×k bins, bin (i, j)
                                     → 4k² box maps       reads its own maps) → vote (average)

Every learnable layer is convolutional and shared by all RoIs: the per-RoI cost is the pooling
alone. Training uses online hard example mining (OHEM, §3.3) by default: every proposal is a
candidate, the loss of each is computed, and only the ``batch_size_per_image`` hardest count.

Shapes: B images, R RoIs per image, k group size, C foreground classes.
"""

import keras
import tensorflow as tf
from keras import layers

from rcnn_zoo.heads.roi_heads import RoIHead
from rcnn_zoo.layers import PSRoIPooling
from rcnn_zoo.targets import per_roi_loss, sample_rois, select_hard_examples


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class PositionSensitiveRoIHead(RoIHead):
    """``call([features [B,H,W,C_in]], rois [B,R,4])`` → ``(logits [B,R,C+1], deltas [B,R,4])``;
    box regression is class-agnostic (4k² maps), as in the paper.

    Args (besides :class:`~rcnn_zoo.heads.roi_heads.RoIHead`'s; R-FCN §4.1 defaults):
        stride: stride (px) of the map read (16: conv5 dilated); in_channels: its channels.
        group_size: ``k`` (7). reduced_channels: width of the 1×1 conv before the maps (1024).
        ohem: train on the ``batch_size_per_image`` (128) hardest of all proposals; ``False``
            samples at ``positive_fraction`` like Fast R-CNN.
    """

    def __init__(
        self,
        num_classes,
        stride=16,
        in_channels=1024,
        group_size=7,
        reduced_channels=1024,
        ohem=True,
        batch_size_per_image=128,
        negative_iou_low=0.0,
        **kwargs,
    ):
        super().__init__(num_classes, batch_size_per_image=batch_size_per_image,
                         negative_iou_low=negative_iou_low, **kwargs)
        self.stride = stride
        self.in_channels = int(in_channels)
        self.group_size = int(group_size)
        self.reduced_channels = int(reduced_channels)
        self.ohem = bool(ohem)
        k2 = self.group_size ** 2
        init = keras.initializers.RandomNormal(stddev=0.01)
        self.reduce = layers.Conv2D(self.reduced_channels, 1, activation="relu", kernel_initializer=init,
                                    dtype=self.dtype_policy, name="conv_new_1")
        self.score_maps = layers.Conv2D(k2 * (self.num_classes + 1), 1, kernel_initializer=init,
                                        dtype=self.dtype_policy, name="rfcn_cls")
        self.box_maps = layers.Conv2D(k2 * 4, 1, kernel_initializer=init, dtype=self.dtype_policy, name="rfcn_bbox")
        self.score_pool = PSRoIPooling(self.group_size, self.num_classes + 1, 1.0 / stride, name="ps_cls")
        self.box_pool = PSRoIPooling(self.group_size, 4, 1.0 / stride, name="ps_bbox")
        self.reduce.build((None, None, None, self.in_channels))
        self.score_maps.build((None, None, None, self.reduced_channels))
        self.box_maps.build((None, None, None, self.reduced_channels))
        self.built = True

    def call(self, levels, rois, training=False):
        hidden = self.reduce(levels[0])
        # Voting: the RoI's score for a class is the mean of its k×k position-sensitive bins.
        logits = tf.reduce_mean(tf.cast(self.score_pool(self.score_maps(hidden), rois), tf.float32), axis=(2, 3))
        deltas = tf.reduce_mean(tf.cast(self.box_pool(self.box_maps(hidden), rois), tf.float32), axis=(2, 3))
        return logits, deltas

    def sample(self, proposals, proposal_valid, gt_boxes, gt_labels):
        if not self.ohem:
            return super().sample(proposals, proposal_valid, gt_boxes, gt_labels)
        # OHEM: every proposal is a candidate (ground-truth boxes too, as long as they fit in the
        # static P slots: positives are taken first); the loss then picks the hardest.
        return sample_rois(
            proposals, proposal_valid, gt_boxes, gt_labels,
            num_samples=proposals.shape[1],
            positive_fraction=1.0,
            foreground_iou=self.positive_iou,
            background_iou_high=self.negative_iou_high,
            background_iou_low=self.negative_iou_low,
            box_weights=self.box_weights,
        )

    def losses_for(self, outputs, classification_loss, box_loss):
        if self.ohem:
            targets = outputs["roi_targets"]
            losses = per_roi_loss(targets["labels"], outputs["class_logits"], targets["deltas"], outputs["box_deltas"])
            hard = select_hard_examples(losses, targets["labels"], self.batch_size_per_image)
            outputs = dict(outputs, roi_targets=dict(targets, labels=hard))
        return super().losses_for(outputs, classification_loss, box_loss)

    def get_config(self):
        config = super().get_config()
        config.update(stride=self.stride, in_channels=self.in_channels, group_size=self.group_size,
                      reduced_channels=self.reduced_channels, ohem=self.ohem)
        return config
