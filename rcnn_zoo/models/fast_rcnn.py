"""Fast R-CNN (Girshick 2015, "Fast R-CNN", ICCV), trained with the paper's multi-task loss.

    images ──→ backbone (one pass per image) ──┐
    proposals (selective search, given) ───────┴→ RoI pooling 7×7 → fc6 → fc7 ─┬→ softmax, C+1
                                                                                └→ class-specific deltas

Unlike Faster R-CNN the proposals come from outside the network (``rcnn_zoo.proposals``), so
the model input is a dict ``{"images": [B,H,W,3], "proposals": [B,R,4]}``.

Training follows §2.3: each image contributes ``roi_batch_size_per_image = 64`` RoIs, at most
25 % foreground (IoU ≥ 0.5 with a ground-truth box), the rest background (IoU in [0.1, 0.5)),
sampled from its proposals plus its ground-truth boxes. The paper's mini-batch of N = 2 images
(R = 128 RoIs) is simply a batch size of 2 in ``fit``. Regression targets are encoded with
weights (10, 10, 5, 5), i.e. divided by py-faster-rcnn's target stds (0.1, 0.1, 0.2, 0.2) (the
paper normalises them to zero mean and unit variance, §2.3 "Multi-task loss"); the loss is
``L_cls + L_loc`` with smooth L1 (λ = 1). The paper's horizontal flips belong in the input
pipeline; its multi-scale option is not implemented (single scale s = 600, max 1000).

At test time every proposal is scored, boxes are decoded per class and class-wise NMS (0.3, the
paper's code) keeps ``max_detections``. §3.1's truncated SVD of fc6/fc7 is
:meth:`FastRCNN.compress_fc_layers`.

Shapes: B images, R proposals per image (padded), S sampled RoIs per image (training), C
foreground classes, D = max_detections.
"""

import keras
import tensorflow as tf

from rcnn_zoo.backbones import build_backbone
from rcnn_zoo.heads import BoxPredictor, FCBoxHead, MultiLevelRoIAlign, Res5BoxHead
from rcnn_zoo.heads.svd import SVDFCBoxHead, compress_fc_box_head
from rcnn_zoo.layers import RoIAlign, RoIPooling
from rcnn_zoo.models.detector import TwoStageDetector, _columns, _xyxy_factors, unpack_images
from rcnn_zoo.ops import boxes as box_ops
from rcnn_zoo.targets import sample_rois
from rcnn_zoo.weights import load_detector_weights

# Paper defaults (Fast R-CNN §2–§3 and its released code), overridden by the backbone's own
# defaults for these keys (e.g. the tiny backbone's narrow head and no resizing), overridden by
# the caller. VGG16's 4096-wide fc6/fc7 with dropout 0.5 come with the "vgg16" backbone.
DEFAULTS = {
    "image_min_size": 600,
    "image_max_size": 1000,
    "resize_rounding": "round",
    "size_divisible": 1,
    "roi_pooling": "pool",
    "roi_pool_size": 7,
    "roi_sampling_ratio": -1,
    "roi_aligned": False,
    "roi_levels": None,
    "roi_head_dim": 4096,
    "roi_head_dropout": 0.0,
    "roi_positive_iou": 0.5,
    "roi_negative_iou_high": 0.5,
    "roi_negative_iou_low": 0.1,
    "roi_batch_size_per_image": 64,
    "roi_positive_fraction": 0.25,
    "roi_box_weights": (10.0, 10.0, 5.0, 5.0),
    "roi_fc6_rank": None,
    "roi_fc7_rank": None,
}
ROI_POOLING = ("pool", "align")
# Defaults of the constructor's named arguments (the paper's; a preset or the caller may set them).
CONSTRUCTOR_DEFAULTS = {
    "backbone": "vgg16",
    "bounding_box_format": "xyxy",
    "score_threshold": 0.05,
    "nms_threshold": 0.3,
    "max_detections": 100,
}


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class FastRCNN(TwoStageDetector):
    """Fast R-CNN as a ``keras.Model``: ``compile()``, ``fit()``, ``predict()``, ``save()``.

    ``num_classes`` counts foreground classes only; labels are ``0 … num_classes−1``.

    Inputs: ``{"images": [B, H, W, 3] raw RGB pixels (uint8 or float 0..255, padded
    bottom/right), "proposals": [B, R, 4]}``, proposals in ``bounding_box_format`` and the
    pixels of ``images``, padded: a row is a proposal when it has positive width and height
    (zeros, or any empty/inverted/non-finite row, is padding; so is a box wholly outside the
    image). Padding rows are never sampled nor detected. ``rcnn_zoo.proposals`` computes
    selective search proposals (xyxy), pads them and builds datasets.

    Training targets: ``{"boxes": [B, G, 4], "labels": [B, G]}`` padded with label −1, boxes in
    ``bounding_box_format`` and image pixels. ``predict`` returns ``{"boxes" [B,D,4], "scores"
    [B,D], "labels" [B,D] (−1 padding), "num_detections" [B]}`` in the same format and pixels.

    Args:
        num_classes: foreground classes.
        backbone: ``"vgg16"`` (the paper's large model), ``"tiny"`` (small, for tests and CPU
            training), ``"resnet50"``/``"resnet101"`` (C4, conv5 as the RoI head),
            ``"resnet50_fpn"``, ``"mobilenet_v3_large_fpn"`` (multi-level RoIAlign).
        weights: ``None`` or a path to a ``.weights.h5`` / ``.keras`` file of a Fast R-CNN of
            the same configuration.
        backbone_weights: ``None`` (random) or ``"imagenet"``.
        bounding_box_format: format of proposals, target and predicted boxes.
        class_names: optional list of ``num_classes`` names.
        roi_pooling: ``"pool"`` (the paper's RoI max pooling) or ``"align"`` (RoIAlign);
            ``None``: the backbone's choice (vgg16: pool; tiny: align, which suits its stride-8
            map and small objects: mAP@0.5 0.95 vs 0.88 with pool in the shapes test's budget),
            else the paper's pool. FPN backbones always use multi-level RoIAlign.
        image_min_size, image_max_size: resize rule (the paper's single scale: 600, max 1000;
            ``None`` keeps the input size; the tiny backbone defaults to ``None``).
        roi_pool_size, roi_sampling_ratio, roi_aligned, roi_levels: RoI feature extraction
            (``roi_aligned``: RoIAlign's half-pixel shift, as FasterRCNN).
        roi_head_dim, roi_head_dropout: width and dropout of fc6/fc7.
        roi_batch_size_per_image, roi_positive_fraction, roi_positive_iou,
            roi_negative_iou_high, roi_negative_iou_low: RoI sampling (64, 0.25, 0.5, 0.5, 0.1).
        roi_box_weights: delta weights ``(wx, wy, ww, wh)``.
        roi_fc6_rank, roi_fc7_rank: truncated-SVD ranks of fc6/fc7 (``None``: whole layers);
            set by :meth:`compress_fc_layers` and kept in the config.
        score_threshold, nms_threshold, max_detections: test-time post-processing (0.05, 0.3,
            100 as the paper's code).
    Every hyperparameter not given takes the backbone's default, then the paper's (``DEFAULTS``).
    """

    LOSS_NAMES = ("cls", "box")
    # export_saved_model adds a "proposals" serving input for models that take them.
    takes_proposals = True

    PRESET_DETECTOR = "FastRCNN"

    def __init__(
        self,
        num_classes=None,
        backbone=None,
        weights=None,
        backbone_weights=None,
        bounding_box_format=None,
        class_names=None,
        roi_pooling=None,
        score_threshold=None,
        nms_threshold=None,
        max_detections=None,
        **hyperparameters,
    ):
        named, hyperparameters, layer_kwargs = self.resolve_arguments(
            weights,
            dict(
                num_classes=num_classes, backbone=backbone, bounding_box_format=bounding_box_format,
                class_names=class_names, roi_pooling=roi_pooling, score_threshold=score_threshold,
                nms_threshold=nms_threshold, max_detections=max_detections,
            ),
            hyperparameters,
            CONSTRUCTOR_DEFAULTS,
            DEFAULTS,
        )
        backbone, roi_pooling = named["backbone"], named["roi_pooling"]
        # Only what the caller passed is serialised (an explicit None must stay distinguishable
        # from "default").
        self._given = dict(hyperparameters)
        if roi_pooling is not None:
            self._given["roi_pooling"] = roi_pooling
        spec = build_backbone(backbone, weights=backbone_weights)
        hp = dict(DEFAULTS)
        hp.update({k: v for k, v in spec.defaults.items() if k in DEFAULTS})
        hp.update(self._given)
        if hp["roi_pooling"] not in ROI_POOLING:
            raise ValueError(f"roi_pooling must be one of {ROI_POOLING}, got {hp['roi_pooling']!r}")
        # The model casts its inputs itself; never let a float16 policy round proposal pixels.
        layer_kwargs.setdefault("autocast", False)
        super().__init__(
            num_classes=named["num_classes"],
            bounding_box_format=named["bounding_box_format"],
            class_names=named["class_names"],
            image_min_size=hp["image_min_size"],
            image_max_size=hp["image_max_size"],
            preprocessing=spec.preprocessing,
            resize_rounding=hp["resize_rounding"],
            size_divisible=hp["size_divisible"],
            score_threshold=named["score_threshold"],
            nms_threshold=named["nms_threshold"],
            max_detections=named["max_detections"],
            **layer_kwargs,
        )
        self.backbone_name = backbone
        self.backbone_weights = backbone_weights
        self.hp = hp
        self.feature_names = spec.feature_names
        self.feature_strides = spec.strides
        self._build_layers(spec, hp)
        if weights is not None:
            load_detector_weights(self, weights)

    # ------------------------------------------------------------------ construction
    def _build_layers(self, spec, hp):
        self.backbone = spec.model
        if hp["roi_levels"] is None:
            self.roi_feature_indices = [0]
        else:
            self.roi_feature_indices = [spec.feature_names.index(n) for n in hp["roi_levels"]]
        pool, ratio = hp["roi_pool_size"], hp["roi_sampling_ratio"]
        strides = [spec.strides[i] for i in self.roi_feature_indices]
        if len(strides) > 1:
            self.roi_pooler = MultiLevelRoIAlign(
                strides, pool, ratio, aligned=hp["roi_aligned"], name="roi_pooler"
            )
        elif hp["roi_pooling"] == "align":
            self.roi_pooler = RoIAlign(
                (pool, pool), 1.0 / strides[0], ratio, aligned=hp["roi_aligned"], name="roi_pooler"
            )
        else:
            self.roi_pooler = RoIPooling((pool, pool), 1.0 / strides[0], name="roi_pooler")
        channels = spec.channels[self.roi_feature_indices[0]]
        ranks = (hp["roi_fc6_rank"], hp["roi_fc7_rank"])
        if spec.roi_head == "res5":
            if ranks != (None, None):
                raise ValueError("truncated SVD (roi_fc6_rank/roi_fc7_rank) needs a fully connected head, not res5")
            self.box_head = Res5BoxHead(spec.res5, name="box_head")
            head_dim = spec.res5.output.shape[-1]
        elif ranks != (None, None):
            self.box_head = SVDFCBoxHead(
                hp["roi_head_dim"], hp["roi_head_dropout"], *ranks, name="box_head"
            )
            head_dim = hp["roi_head_dim"]
        else:
            self.box_head = FCBoxHead(hp["roi_head_dim"], hp["roi_head_dropout"], name="box_head")
            head_dim = hp["roi_head_dim"]
        self.box_head.build((None, pool, pool, channels))
        self.box_predictor = BoxPredictor(self.num_classes, name="box_predictor")
        self.box_predictor.build((None, head_dim))
        self.built = True

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def _unpack_inputs(inputs):
        """``{"images", "proposals"[, "image_sizes"]}`` → images, image sizes, proposals."""
        if not isinstance(inputs, dict) or not {"images", "proposals"} <= set(inputs):
            got = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
            raise ValueError(
                "FastRCNN takes a dict {'images': [B, H, W, 3], 'proposals': [B, R, 4]} "
                "(optionally 'image_sizes': [B, 2] for a padded batch of different sizes) "
                f"(got {got}); compute proposals with rcnn_zoo.proposals.selective_search / "
                "compute_proposals and pad them with rcnn_zoo.proposals.pad_proposals"
            )
        images, image_sizes = unpack_images(inputs)
        return images, image_sizes, inputs["proposals"]

    def prepare_proposals(self, proposals, image_sizes, resized_sizes):
        """User proposals → xyxy boxes in resized-image pixels and their validity.

        Args:
            proposals: ``[B, R, 4]`` in ``bounding_box_format``, each image's own pixels.
            image_sizes, resized_sizes: int ``[B, 2]`` each image's size before and after
                resizing.
        Returns:
            ``(boxes [B, R, 4] float32 xyxy, clipped to the resized image, zeros where invalid;
            valid [B, R] bool)``: valid rows are finite with positive width and height, also
            after clipping (a box wholly outside the image is not a proposal).
        """
        boxes = tf.cast(proposals, tf.float32)
        if boxes.shape.rank != 3 or boxes.shape[-1] != 4:
            raise ValueError(f"proposals must be [B, R, 4], got shape {boxes.shape}")
        input_height, input_width = _columns(image_sizes)
        boxes = box_ops.convert_format(
            boxes, self.bounding_box_format, "xyxy", height=input_height, width=input_width
        )
        finite = tf.reduce_all(tf.math.is_finite(boxes), axis=-1)
        boxes = tf.where(finite[..., None], boxes, 0.0)
        # Clipping is monotone, so empty or inverted rows stay so and rows wholly outside the
        # image become empty: one test after clipping covers them all.
        scale = tf.cast(resized_sizes, tf.float32) / tf.cast(image_sizes, tf.float32)
        height, width = _columns(resized_sizes)
        boxes = box_ops.clip_to_image(boxes * _xyxy_factors(scale), height, width)
        valid = finite & (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
        return tf.where(valid[..., None], boxes, 0.0), valid

    # ------------------------------------------------------------------ forward
    def call(self, inputs, training=False, ground_truth=None):
        """Forward pass. With ``ground_truth`` (training/evaluation) RoIs are sampled from the
        proposals against it and the raw outputs the losses need are returned; without it,
        every valid proposal is scored and the detections are returned."""
        images, image_sizes, proposals = self._unpack_inputs(inputs)
        normalized, resized_sizes, _ = self.preprocess(images, image_sizes)
        proposals, proposal_valid = self.prepare_proposals(proposals, image_sizes, resized_sizes)
        features = self.backbone(normalized, training=training)
        levels = [features[name] for name in self.feature_names]

        if ground_truth is None:
            rois, roi_valid = proposals, proposal_valid
        else:
            gt_boxes, gt_labels = self.prepare_ground_truth(ground_truth, image_sizes, resized_sizes)
            sampled = sample_rois(
                proposals,
                proposal_valid,
                gt_boxes,
                gt_labels,
                num_samples=self.hp["roi_batch_size_per_image"],
                positive_fraction=self.hp["roi_positive_fraction"],
                foreground_iou=self.hp["roi_positive_iou"],
                background_iou_high=self.hp["roi_negative_iou_high"],
                background_iou_low=self.hp["roi_negative_iou_low"],
                box_weights=self.hp["roi_box_weights"],
            )
            rois, roi_valid = sampled["rois"], sampled["labels"] >= 0
        class_logits, box_deltas = self._roi_head(levels, rois, training)
        if ground_truth is not None:
            return {
                "gt_boxes": gt_boxes,
                "gt_labels": gt_labels,
                "roi_targets": sampled,
                "class_logits": class_logits,
                "box_deltas": box_deltas,
            }
        detections = self.detect(
            rois, roi_valid, class_logits, box_deltas, self.hp["roi_box_weights"], resized_sizes
        )
        detections["boxes"] = self.boxes_to_user_format(detections["boxes"], image_sizes, resized_sizes)
        return detections

    def _roi_head(self, levels, rois, training):
        """RoIs ``[B,R,4]`` → class logits ``[B,R,C+1]`` and deltas ``[B,R,C+1,4]``."""
        roi_levels = [levels[i] for i in self.roi_feature_indices]
        if len(roi_levels) > 1:
            pooled = self.roi_pooler(roi_levels, rois)
        else:
            pooled = self.roi_pooler(roi_levels[0], rois)
        batch, num_rois = tf.shape(rois)[0], tf.shape(rois)[1]
        pooled_shape = tf.shape(pooled)
        flat = tf.reshape(pooled, tf.concat([[-1], pooled_shape[2:]], axis=0))
        hidden = self.box_head(flat, training=training)
        logits, deltas = self.box_predictor(hidden)
        logits = tf.reshape(logits, (batch, num_rois, self.num_classes + 1))
        deltas = tf.reshape(deltas, (batch, num_rois, self.num_classes + 1, 4))
        return logits, deltas

    # ------------------------------------------------------------------ losses
    def compute_losses(self, y_pred):
        """Fast R-CNN eq. 1: ``cls`` (softmax cross-entropy over C+1) and ``box`` (smooth L1
        on the true class's deltas of foreground RoIs), on the RoIs sampled in this pass."""
        fns = self.loss_functions
        return {
            "cls": fns["classification_loss"](y_pred["roi_targets"], y_pred["class_logits"]),
            "box": fns["box_loss"](y_pred["roi_targets"], y_pred["box_deltas"]),
        }

    # ------------------------------------------------------------------ truncated SVD
    def compress_fc_layers(self, fc6_rank=1024, fc7_rank=256):
        """Fast R-CNN §3.1: a new model whose fc6/fc7 are replaced by their truncated SVD.

        Each ``Dense`` ``W [in, out]`` becomes ``Dense(in → r, no bias)`` then ``Dense(r → out,
        the original bias)`` from the top-``r`` singular triplets (``np.linalg.svd``); every
        other variable is copied. The paper's ranks for VGG16 are 1024 (fc6) and 256 (fc7);
        ``None`` leaves a layer whole. This model is left unchanged.

        The result records the ranks in its config (``roi_fc6_rank``/``roi_fc7_rank``), so it
        saves and loads like any model. It is not compiled: call ``compile()`` to fine-tune.
        """
        if not isinstance(self.box_head, (FCBoxHead, SVDFCBoxHead)):
            raise ValueError(
                f"truncated SVD needs a fully connected box head; backbone {self.backbone_name!r} "
                f"uses {type(self.box_head).__name__}"
            )
        head = compress_fc_box_head(self.box_head, fc6_rank, fc7_rank)
        config = self.get_config()
        config["roi_fc6_rank"] = fc6_rank
        config["roi_fc7_rank"] = fc7_rank
        compressed = type(self).from_config(config)
        pairs = [(compressed.backbone, self.backbone), (compressed.box_predictor, self.box_predictor),
                 (compressed.box_head, head)]
        for target, source in pairs:
            target.set_weights(source.get_weights())
        copied = sum(len(target.weights) for target, _ in pairs)
        if copied != len(compressed.weights):
            raise RuntimeError(f"copied {copied} of {len(compressed.weights)} variables")
        return compressed

    # ------------------------------------------------------------------ config
    def get_config(self):
        config = super().get_config()
        for key in ("image_min_size", "image_max_size", "resize_rounding", "size_divisible"):
            config.pop(key)
        config.update(
            {
                "backbone": self.backbone_name,
                "backbone_weights": None,  # weights travel with the saved model, not re-downloaded
                "weights": None,
                "roi_pooling": None,
            }
        )
        config.update(self._given)
        return config
