"""The second stage of every two-stage detector: RoI features → class scores and boxes.

:class:`RoIHead` is what all second stages share (Fast R-CNN §2.3 and §2.4): during training it
samples RoIs from the proposals against the ground truth and computes the ``cls`` and ``box``
losses on them; at test time it scores every proposal and runs the class-wise post-processing of
``heads/postprocess.py``. :class:`BoxRoIHead` is Fast/Faster R-CNN's: an RoI pooler (RoIPool,
RoIAlign or multi-level RoIAlign), a box head (fc6/fc7, 4conv1fc, truncated-SVD fc6/fc7 or
ResNet's conv5) and the sibling predictor. R-FCN's position-sensitive head is in
``heads/rfcn.py``.

Shapes: B images, P proposals per image, S sampled RoIs per image, C foreground classes,
D = ``max_detections``. Boxes are xyxy in resized-image pixels.
"""

import keras
import tensorflow as tf
from keras import layers

from rcnn_zoo.heads.conv_fc import ConvFCBoxHead
from rcnn_zoo.heads.fast_rcnn import BoxPredictor, FCBoxHead, Res5BoxHead
from rcnn_zoo.heads.poolers import MultiLevelRoIAlign
from rcnn_zoo.heads.postprocess import classwise_nms, decode_class_boxes
from rcnn_zoo.heads.svd import SVDFCBoxHead
from rcnn_zoo.layers import RoIAlign, RoIPooling
from rcnn_zoo.targets import sample_rois

ROI_POOLING = ("pool", "align")
HEAD_TYPES = ("fc", "conv_fc")


class RoIHead(layers.Layer):
    """RoI sampling, the two detection losses and post-processing; subclasses map
    ``call(levels, rois, training)`` → ``(logits [B,R,C+1], deltas [B,R,C+1,4] or [B,R,4])``.

    Args (Fast R-CNN §2.3 defaults):
        num_classes: foreground classes ``C`` (head index 0 is background).
        positive_iou: a proposal is foreground at IoU ≥ it with a ground-truth box (0.5).
        negative_iou_high, negative_iou_low: background at IoU in ``[low, high)`` (0.5, 0.1).
        batch_size_per_image, positive_fraction: RoIs per image, largest foreground share.
        box_weights: ``(wx, wy, ww, wh)`` of the regression targets (1 / py-faster-rcnn's stds).
    """

    def __init__(
        self,
        num_classes,
        positive_iou=0.5,
        negative_iou_high=0.5,
        negative_iou_low=0.1,
        batch_size_per_image=64,
        positive_fraction=0.25,
        box_weights=(10.0, 10.0, 5.0, 5.0),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.positive_iou = positive_iou
        self.negative_iou_high = negative_iou_high
        self.negative_iou_low = negative_iou_low
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.box_weights = tuple(box_weights)

    # ------------------------------------------------------------------ training
    def sample(self, proposals, proposal_valid, gt_boxes, gt_labels):
        """Fast R-CNN's balanced RoI sampling → ``sample_rois``'s dict (``rois [B,S,4]``,
        ``labels [B,S]`` 0 = background, ``c + 1`` class ``c``, −1 padding; ``deltas``)."""
        return sample_rois(
            proposals, proposal_valid, gt_boxes, gt_labels,
            num_samples=self.batch_size_per_image,
            positive_fraction=self.positive_fraction,
            foreground_iou=self.positive_iou,
            background_iou_high=self.negative_iou_high,
            background_iou_low=self.negative_iou_low,
            box_weights=self.box_weights,
        )

    def losses_for(self, outputs, classification_loss, box_loss):
        """Fast R-CNN eq. 1: ``{"cls", "box"}`` on the RoIs sampled in this pass."""
        targets = outputs["roi_targets"]
        return {
            "cls": classification_loss(targets, outputs["class_logits"]),
            "box": box_loss(targets, outputs["box_deltas"]),
        }

    def forward(self, levels, proposals, proposal_valid, ground_truth, training=False):
        """The second stage on ``proposals [B,P,4]``: with ``ground_truth = (gt_boxes, gt_labels)``
        the outputs the losses need (``roi_targets``, ``class_logits``, ``box_deltas``), without
        it ``{"rois", "roi_valid", "class_logits", "box_deltas"}`` for :meth:`detect`."""
        if ground_truth is None:
            logits, deltas = self(levels, proposals, training=training)
            return {"rois": proposals, "roi_valid": proposal_valid, "class_logits": logits, "box_deltas": deltas}
        targets = self.sample(proposals, proposal_valid, *ground_truth)
        logits, deltas = self(levels, targets["rois"], training=training)
        return {"roi_targets": targets, "class_logits": logits, "box_deltas": deltas}

    # ------------------------------------------------------------------ test time
    def detect(self, outputs, resized_sizes, score_threshold, nms_threshold, max_detections):
        """:meth:`forward`'s test outputs → class-wise NMS detections (``classwise_nms``'s dict,
        boxes xyxy in resized pixels, clipped to each image's ``resized_sizes [B,2]``)."""
        probs = tf.nn.softmax(tf.cast(outputs["class_logits"], tf.float32), axis=-1)[..., 1:]
        deltas = outputs["box_deltas"]
        if deltas.shape.rank == 4:
            deltas = deltas[:, :, 1:, :]  # row 0 (background) is never decoded
        boxes, big_enough = decode_class_boxes(outputs["rois"], deltas, self.box_weights, resized_sizes)
        keep = outputs["roi_valid"][..., None] & big_enough
        return classwise_nms(boxes, probs, keep, score_threshold, nms_threshold, max_detections)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes, positive_iou=self.positive_iou,
            negative_iou_high=self.negative_iou_high, negative_iou_low=self.negative_iou_low,
            batch_size_per_image=self.batch_size_per_image, positive_fraction=self.positive_fraction,
            box_weights=self.box_weights,
        )
        return config


def build_roi_pooler(strides, pooling, pool_size, sampling_ratio, aligned):
    """RoIPool / RoIAlign on one map of stride ``strides[0]`` px, or multi-level RoIAlign (FPN)."""
    if len(strides) > 1:
        return MultiLevelRoIAlign(strides, pool_size, sampling_ratio, aligned=aligned, name="roi_pooler")
    if pooling == "align":
        return RoIAlign((pool_size, pool_size), 1.0 / strides[0], sampling_ratio, aligned=aligned, name="roi_pooler")
    if pooling == "pool":
        return RoIPooling((pool_size, pool_size), 1.0 / strides[0], name="roi_pooler")
    raise ValueError(f"roi_pooling must be one of {ROI_POOLING}, got {pooling!r}")


def build_box_head(head_type, dim, dropout, convs, ranks, res5):
    """The per-RoI network after pooling → ``(layer, output width)``."""
    if res5 is not None:
        if ranks != (None, None):
            raise ValueError("truncated SVD (roi_fc6_rank/roi_fc7_rank) needs a fully connected head, not res5")
        return Res5BoxHead(res5, name="box_head"), res5.output.shape[-1]
    if head_type == "conv_fc":
        # 4conv1fc (torchvision fasterrcnn_resnet50_fpn_v2): 3×3 conv + BN + ReLU per entry.
        convs = tuple(convs) if convs is not None else (256,) * 4
        return ConvFCBoxHead(convs, (dim,), dropout=dropout, name="box_head"), dim
    if head_type != "fc":
        raise ValueError(f"roi_head_type must be one of {HEAD_TYPES}, got {head_type!r}")
    if ranks != (None, None):
        return SVDFCBoxHead(dim, dropout, *ranks, name="box_head"), dim
    return FCBoxHead(dim, dropout, name="box_head"), dim


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class BoxRoIHead(RoIHead):
    """RoI pooler → box head → sibling predictor (Fast R-CNN fig. 1, Faster R-CNN's second stage).

    ``call(levels, rois [B,R,4], training)`` → ``(logits [B,R,C+1], deltas [B,R,C+1,4])``.

    Args (besides :class:`RoIHead`'s):
        strides: stride (px) of each map read (several: FPN multi-level RoIAlign);
            in_channels: their channels.
        pooling: ``"pool"`` (RoIPool, Fast R-CNN) or ``"align"`` (RoIAlign).
        pool_size, sampling_ratio, aligned: pooled size, RoIAlign samples per bin (−1 adaptive)
            and its half-pixel shift (detectron2/MMDetection).
        head_type: ``"fc"`` (fc6/fc7) or ``"conv_fc"`` (4conv1fc); head_dim, head_dropout,
            head_convs: their widths and dropout.
        fc6_rank, fc7_rank: truncated-SVD ranks of fc6/fc7 (Fast R-CNN §3.1), ``None`` = whole.
        res5: ResNet's conv5 model as the box head (C4 backbones; not serialised: the detector
            rebuilds it from its backbone).
    """

    def __init__(
        self,
        num_classes,
        strides=(16,),
        in_channels=512,
        pooling="pool",
        pool_size=7,
        sampling_ratio=-1,
        aligned=False,
        head_type="fc",
        head_dim=4096,
        head_dropout=0.0,
        head_convs=None,
        fc6_rank=None,
        fc7_rank=None,
        res5=None,
        **kwargs,
    ):
        super().__init__(num_classes, **kwargs)
        self.strides = tuple(strides)
        self.in_channels = int(in_channels)
        self._arguments = dict(
            pooling=pooling, pool_size=pool_size, sampling_ratio=sampling_ratio, aligned=aligned,
            head_type=head_type, head_dim=head_dim, head_dropout=head_dropout, head_convs=head_convs,
            fc6_rank=fc6_rank, fc7_rank=fc7_rank,
        )
        # Built here, outside this layer's name scope: variables keep the paths converters and
        # weight files name (``box_head/fc6/kernel``, ``box_predictor/cls_score/kernel``).
        self.pooler = build_roi_pooler(self.strides, pooling, pool_size, sampling_ratio, aligned)
        self.box_head, width = build_box_head(head_type, head_dim, head_dropout, head_convs,
                                              (fc6_rank, fc7_rank), res5)
        self.box_head.build((None, pool_size, pool_size, self.in_channels))
        self.box_predictor = BoxPredictor(self.num_classes, name="box_predictor")
        self.box_predictor.build((None, width))
        self.built = True

    @property
    def pool_size(self):
        """Side, in bins, of the pooled RoI features the box head reads (7: Fast R-CNN §2.1)."""
        return self._arguments["pool_size"]

    def call(self, levels, rois, training=False):
        pooled = self.pooler(levels if len(levels) > 1 else levels[0], rois)
        batch, num_rois = tf.shape(rois)[0], tf.shape(rois)[1]
        flat = tf.reshape(pooled, tf.concat([[-1], tf.shape(pooled)[2:]], axis=0))
        logits, deltas = self.box_predictor(self.box_head(flat, training=training))
        logits = tf.reshape(logits, (batch, num_rois, self.num_classes + 1))
        deltas = tf.reshape(deltas, (batch, num_rois, self.num_classes + 1, 4))
        return logits, deltas

    def get_config(self):
        config = super().get_config()
        config.update(strides=self.strides, in_channels=self.in_channels, **self._arguments)
        return config
