"""Region Proposal Network (Ren et al. 2015, "Faster R-CNN", section 3.1).

:class:`RegionProposalNetwork` is the whole first stage: anchors at every location of each
feature map, the RPN head's objectness and deltas, proposals after decoding and NMS, and — with
ground truth — the RPN's training targets and its two losses (``rpn_cls``, ``rpn_box``).

:class:`RPNHead`: a 3×3 conv slides over each feature map, then two sibling 1×1 convs predict, for each of the A
anchors at every location, one objectness logit (sigmoid, as torchvision; the paper's 2-way
softmax is equivalent) and 4 box deltas. One head is shared across FPN levels.
``conv_depth`` > 1 stacks more 3×3 conv + ReLU layers (torchvision's ``RPNHead(conv_depth=2)``
of ``fasterrcnn_resnet50_fpn_v2``, which has no batch norm in the RPN).

Shapes: B images, level l of size H_l × W_l, A anchors per location.
"""

import keras
import tensorflow as tf
from keras import layers, ops

from rcnn_zoo.layers import AnchorGenerator, ProposalLayer
from rcnn_zoo.targets import rpn_targets


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class RPNHead(layers.Layer):
    """``call([features_l [B,H_l,W_l,C]])`` → ``(objectness [B,ΣH_l·W_l·A], deltas [B,ΣH_l·W_l·A,4],
    per_level_objectness list, per_level_deltas list)``, flattened in (y, x, anchor) order to
    match :class:`~rcnn_zoo.layers.AnchorGenerator`.

    ``conv_depth`` 3×3 conv + ReLU layers precede the sibling 1×1 convs; they are named
    ``conv`` (depth 1, as always), then ``conv2``, ``conv3``, …
    """

    def __init__(self, num_anchors, channels=512, conv_depth=1, **kwargs):
        super().__init__(**kwargs)
        self.num_anchors = num_anchors
        self.channels = channels
        self.conv_depth = int(conv_depth)
        if self.conv_depth < 1:
            raise ValueError(f"RPNHead conv_depth must be at least 1, got {conv_depth!r}")
        init = keras.initializers.RandomNormal(stddev=0.01)
        self.convs = [
            layers.Conv2D(
                channels, 3, padding="same", activation="relu", kernel_initializer=init,
                dtype=self.dtype_policy, name="conv" if i == 0 else f"conv{i + 1}",
            )
            for i in range(self.conv_depth)
        ]
        self.conv = self.convs[0]
        self.objectness = layers.Conv2D(
            num_anchors, 1, kernel_initializer=init, dtype=self.dtype_policy, name="objectness"
        )
        self.deltas = layers.Conv2D(
            4 * num_anchors, 1, kernel_initializer=init, dtype=self.dtype_policy, name="deltas"
        )

    def build(self, input_shape):
        channels_in = input_shape[0][-1]
        for conv in self.convs:
            conv.build((None, None, None, channels_in))
            channels_in = self.channels
        self.objectness.build((None, None, None, self.channels))
        self.deltas.build((None, None, None, self.channels))
        self.built = True

    def call(self, features):
        level_logits, level_deltas = [], []
        for feature in features:
            hidden = feature
            for conv in self.convs:
                hidden = conv(hidden)
            batch = ops.shape(feature)[0]
            level_logits.append(ops.reshape(self.objectness(hidden), (batch, -1)))
            level_deltas.append(ops.reshape(self.deltas(hidden), (batch, -1, 4)))
        logits = ops.concatenate(level_logits, axis=1)
        deltas = ops.concatenate(level_deltas, axis=1)
        return logits, deltas, level_logits, level_deltas

    def get_config(self):
        config = super().get_config()
        config.update({"num_anchors": self.num_anchors, "channels": self.channels})
        if self.conv_depth != 1:
            config["conv_depth"] = self.conv_depth
        return config


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class RegionProposalNetwork(layers.Layer):
    """Anchors → RPN head → proposals, and the RPN's targets and losses (Faster R-CNN §3.1).

    ``call(levels, batch_shape, image_info, training)`` with ``levels`` the feature maps it
    reads ``[B,H_l,W_l,C]`` (finest first), ``batch_shape`` the padded input's ``(H, W)`` and
    ``image_info [B,3]`` = each image's resized
    ``(height, width)`` in the padded batch and its resize scale (py-faster-rcnn measures
    ``min_size`` in original pixels) → dict ``anchors [ΣA_l,4]`` xyxy, ``logits [B,ΣA_l]``,
    ``deltas [B,ΣA_l,4]``, ``proposals [B,P,4]`` xyxy pixels, ``proposal_valid [B,P]`` bool.

    Args (paper defaults; the detector passes its ``anchor_*`` and ``rpn_*`` keywords here):
        strides: stride (px) of each feature map read; in_channels: their channels.
        anchor_sizes, anchor_aspect_ratios, anchor_style, anchor_stride_rule: see
            :class:`~rcnn_zoo.layers.AnchorGenerator` (sizes in px, one tuple per level or one
            for all; ratios h/w).
        head_channels, conv_depth: width and number of the RPN's 3×3 convs.
        positive_iou, negative_iou: anchor labels for training (≥ 0.7 object, < 0.3 background).
        batch_size_per_image, positive_fraction: anchors sampled per image (256, at most half
            positive).
        pre_nms_top_n_*, post_nms_top_n_*, nms_threshold, min_size, min_size_rule,
            score_threshold: proposal selection (see :class:`~rcnn_zoo.layers.ProposalLayer`).
    """

    def __init__(
        self,
        strides=(16,),
        in_channels=512,
        anchor_sizes=(128, 256, 512),
        anchor_aspect_ratios=(0.5, 1.0, 2.0),
        anchor_style="py-faster-rcnn",
        anchor_stride_rule="nominal",
        head_channels=512,
        conv_depth=1,
        positive_iou=0.7,
        negative_iou=0.3,
        batch_size_per_image=256,
        positive_fraction=0.5,
        pre_nms_top_n_train=12000,
        post_nms_top_n_train=2000,
        pre_nms_top_n_test=6000,
        post_nms_top_n_test=300,
        nms_threshold=0.7,
        min_size=16.0,
        min_size_rule="py-faster-rcnn",
        score_threshold=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.strides = tuple(strides)
        self.in_channels = int(in_channels)
        self.positive_iou = positive_iou
        self.negative_iou = negative_iou
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        # Sublayers are built here, outside this layer's name scope, so their variables keep
        # the paths converters and weight files name (``rpn_head/conv/kernel``).
        self.anchor_generator = AnchorGenerator(
            sizes=anchor_sizes, aspect_ratios=anchor_aspect_ratios, strides=self.strides,
            convention=anchor_style, stride_rule=anchor_stride_rule, name="anchor_generator",
        )
        anchors = self.anchor_generator.num_anchors_per_location
        if len(set(anchors)) != 1:
            raise ValueError(f"every level needs the same number of anchors, got {anchors}")
        self.head = RPNHead(anchors[0], channels=head_channels, conv_depth=conv_depth,
                            dtype=self.dtype_policy, name="rpn_head")
        self.head.build([(None, None, None, self.in_channels)])
        self.proposal_layer = ProposalLayer(
            pre_nms_top_n_train=pre_nms_top_n_train, post_nms_top_n_train=post_nms_top_n_train,
            pre_nms_top_n_test=pre_nms_top_n_test, post_nms_top_n_test=post_nms_top_n_test,
            nms_threshold=nms_threshold, min_size=min_size, min_size_rule=min_size_rule,
            score_threshold=score_threshold, per_level=len(self.strides) > 1, name="proposal_layer",
        )
        self._arguments = dict(
            anchor_sizes=anchor_sizes, anchor_aspect_ratios=anchor_aspect_ratios,
            anchor_style=anchor_style, anchor_stride_rule=anchor_stride_rule,
            head_channels=head_channels, conv_depth=conv_depth, pre_nms_top_n_train=pre_nms_top_n_train,
            post_nms_top_n_train=post_nms_top_n_train, pre_nms_top_n_test=pre_nms_top_n_test,
            post_nms_top_n_test=post_nms_top_n_test, nms_threshold=nms_threshold, min_size=min_size,
            min_size_rule=min_size_rule, score_threshold=score_threshold,
        )
        self.built = True

    @property
    def anchors_per_location(self):
        """``A``, the anchors at each location of every level."""
        return self.anchor_generator.num_anchors_per_location[0]

    def call(self, levels, batch_shape, image_info, training=False):
        anchors = self.anchor_generator(levels, image_shape=batch_shape)
        logits, deltas, level_logits, level_deltas = self.head(levels)
        per_level = len(levels) > 1
        proposals = self.proposal_layer(
            level_logits if per_level else logits,
            level_deltas if per_level else deltas,
            anchors if per_level else anchors[0],
            image_shape=image_info,
            training=training,
        )
        valid = tf.sequence_mask(proposals["num_valid"], tf.shape(proposals["boxes"])[1])
        return {
            "anchors": tf.concat(anchors, axis=0),
            "rpn_logits": logits,
            "rpn_deltas": deltas,
            "proposals": proposals["boxes"],
            "proposal_valid": valid,
        }

    def losses_for(self, outputs, gt_boxes, gt_labels, objectness_loss, box_loss):
        """``{"rpn_cls", "rpn_box"}`` for this pass's ``outputs``: anchors labelled against the
        ground truth (``gt_boxes [B,G,4]`` xyxy resized pixels, ``gt_labels [B,G]``, −1 padding)
        and sampled (§3.1.3), then the two loss functions given."""
        targets = rpn_targets(
            outputs["anchors"], gt_boxes, gt_labels,
            positive_threshold=self.positive_iou, negative_threshold=self.negative_iou,
            num_samples=self.batch_size_per_image, positive_fraction=self.positive_fraction,
        )
        return {
            "rpn_cls": objectness_loss(targets, outputs["rpn_logits"]),
            "rpn_box": box_loss(targets, outputs["rpn_deltas"]),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            strides=self.strides, in_channels=self.in_channels, positive_iou=self.positive_iou,
            negative_iou=self.negative_iou, batch_size_per_image=self.batch_size_per_image,
            positive_fraction=self.positive_fraction, **self._arguments,
        )
        return config
