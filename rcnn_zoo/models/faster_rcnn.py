"""Faster R-CNN (Ren, He, Girshick, Sun 2015, "Towards Real-Time Object Detection with Region
Proposal Networks"), trained end to end by approximate joint training.

    images → backbone → RPN (anchors, objectness, deltas) → proposals
           → RoI features (RoIPool / RoIAlign / multi-level RoIAlign) → box head → detections

Shapes: B images, A_total anchors over all levels, P proposals per image, S sampled RoIs per
image (training), C foreground classes, D = max_detections.
"""

import keras
import tensorflow as tf

from rcnn_zoo.backbones import build_backbone
from rcnn_zoo.heads import BoxPredictor, FCBoxHead, MultiLevelRoIAlign, Res5BoxHead, RPNHead
from rcnn_zoo.layers import AnchorGenerator, ProposalLayer, RoIAlign, RoIPooling
from rcnn_zoo.models.detector import TwoStageDetector, unpack_images
from rcnn_zoo.targets import rpn_targets, sample_rois
from rcnn_zoo.weights import load_detector_weights

# Paper defaults (Faster R-CNN, section 3.1.3 and 3.3; Fast R-CNN section 2.3), overridden by
# the backbone's own defaults (e.g. torchvision's for resnet50_fpn), overridden by the caller.
DEFAULTS = {
    "image_min_size": 800,
    "image_max_size": 1333,
    "resize_rounding": "round",
    "size_divisible": 1,
    "anchor_sizes": (128, 256, 512),
    "anchor_aspect_ratios": (0.5, 1.0, 2.0),
    "anchor_style": "py-faster-rcnn",
    "anchor_stride_rule": "nominal",
    "rpn_head_channels": 512,
    "rpn_conv_depth": 1,
    "rpn_positive_iou": 0.7,
    "rpn_negative_iou": 0.3,
    "rpn_batch_size_per_image": 256,
    "rpn_positive_fraction": 0.5,
    "rpn_pre_nms_top_n_train": 12000,
    "rpn_post_nms_top_n_train": 2000,
    "rpn_pre_nms_top_n_test": 6000,
    "rpn_post_nms_top_n_test": 300,
    "rpn_nms_threshold": 0.7,
    "rpn_min_size": 16.0,
    "rpn_min_size_rule": "py-faster-rcnn",
    "rpn_score_threshold": 0.0,
    "roi_pooling": "pool",
    "roi_pool_size": 7,
    "roi_sampling_ratio": -1,
    "roi_aligned": False,
    "roi_levels": None,
    "roi_head_dim": 1024,
    "roi_head_dropout": 0.0,
    "roi_head_type": "fc",
    "roi_head_convs": None,
    "roi_positive_iou": 0.5,
    "roi_negative_iou_high": 0.5,
    "roi_negative_iou_low": 0.0,
    "roi_batch_size_per_image": 512,
    "roi_positive_fraction": 0.25,
    "roi_box_weights": (10.0, 10.0, 5.0, 5.0),
}


# Defaults of the constructor's named arguments (a preset or the caller may set them).
CONSTRUCTOR_DEFAULTS = {
    "backbone": "resnet50_fpn",
    "bounding_box_format": "xyxy",
    "score_threshold": 0.05,
    "nms_threshold": 0.5,
    "max_detections": 100,
}


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class FasterRCNN(TwoStageDetector):
    """Faster R-CNN as a ``keras.Model``: ``compile()``, ``fit()``, ``predict()``, ``save()``.

    ``num_classes`` counts foreground classes only; labels are ``0 … num_classes−1`` and the
    background class is internal (torchvision's models count background as class 0 — do not add
    one here).

    Inputs: images ``[B, H, W, 3]`` raw RGB pixels (uint8 or float 0..255, padded bottom/right).
    Training targets: ``{"boxes": [B, G, 4], "labels": [B, G]}`` padded with label −1, boxes in
    ``bounding_box_format`` and image pixels. ``predict`` returns ``{"boxes" [B,D,4], "scores"
    [B,D], "labels" [B,D] (−1 padding), "num_detections" [B]}`` in the same format and pixels.

    ``FasterRCNN(weights="coco")`` (or ``FasterRCNN.from_preset("coco")``) builds the registered
    model exactly — class count, backbone, every pre/post-processing setting, class names — and
    loads it; arguments passed with it override the preset (``num_classes=5``: fine-tuning start).

    Args:
        num_classes: foreground classes (taken from the preset with ``weights=<name>``).
        backbone: ``"vgg16"``, ``"resnet50"``, ``"resnet101"`` (C4), ``"resnet50_fpn"``,
            ``"mobilenet_v3_large_fpn"`` or ``"tiny"`` (small, for tests and CPU training).
        weights: ``None``, a preset name (``"voc"``, ``"coco"``, ``"shapes"``, …; see
            ``rcnn_zoo.weights.available_weights("FasterRCNN")``) or a path to a
            ``.weights.h5`` / ``.keras`` file of a detector of the same configuration.
        backbone_weights: ``None`` (random) or ``"imagenet"`` (keras.applications download).
        bounding_box_format: format of target and predicted boxes.
        class_names: optional list of ``num_classes`` names.
        roi_pooling: ``"pool"`` (Fast R-CNN RoI max pooling) or ``"align"`` (RoIAlign);
            FPN backbones always use multi-level RoIAlign.
        image_min_size, image_max_size: resize rule (shorter side, longer side cap), ``None``
            to keep the input size.
        anchor_*: anchor sizes (px; per level for FPN), aspect ratios (h/w) and convention.
        rpn_*: RPN head width, matcher thresholds, sampling, proposal top-n/NMS/min size.
        roi_*: RoI pooled size, sampling ratio, half-pixel ``roi_aligned`` (detectron2/MMDetection
            RoIAlign), head width/dropout, RoI sampling, box weights.
        score_threshold, nms_threshold, max_detections: test-time post-processing.
    Every ``None`` takes the backbone's default, then the paper's (see ``DEFAULTS``).
    """

    LOSS_NAMES = ("rpn_cls", "rpn_box", "cls", "box")

    PRESET_DETECTOR = "FasterRCNN"

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
        # Only what the caller passed is stored (and serialised): an explicit None, e.g.
        # image_min_size=None to keep the input size, must stay distinguishable from "default".
        self._given = dict(hyperparameters)
        if roi_pooling is not None:
            self._given["roi_pooling"] = roi_pooling
        spec = self.build_backbone_spec(backbone, backbone_weights)
        hp = dict(DEFAULTS)
        hp.update(spec.defaults)
        hp.update(self._given)
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
    @staticmethod
    def build_backbone_spec(name, weights):
        """The :class:`~rcnn_zoo.backbones.Backbone` for ``name`` (R-FCN overrides this)."""
        return build_backbone(name, weights=weights)

    def _build_layers(self, spec, hp):
        self.backbone = spec.model
        rpn_names, rpn_strides, rpn_channels = spec.rpn_levels()
        self.rpn_feature_names = rpn_names
        self.anchor_generator = AnchorGenerator(
            sizes=hp["anchor_sizes"],
            aspect_ratios=hp["anchor_aspect_ratios"],
            strides=rpn_strides,
            convention=hp["anchor_style"],
            stride_rule=hp["anchor_stride_rule"],
            name="anchor_generator",
        )
        num_anchors = self.anchor_generator.num_anchors_per_location
        if len(set(num_anchors)) != 1:
            raise ValueError(f"every level needs the same number of anchors, got {num_anchors}")
        self.rpn_head = RPNHead(
            num_anchors[0], channels=hp["rpn_head_channels"], conv_depth=hp["rpn_conv_depth"],
            name="rpn_head",
        )
        self.rpn_head.build([(None, None, None, rpn_channels[0])])
        self.proposal_layer = ProposalLayer(
            pre_nms_top_n_train=hp["rpn_pre_nms_top_n_train"],
            post_nms_top_n_train=hp["rpn_post_nms_top_n_train"],
            pre_nms_top_n_test=hp["rpn_pre_nms_top_n_test"],
            post_nms_top_n_test=hp["rpn_post_nms_top_n_test"],
            nms_threshold=hp["rpn_nms_threshold"],
            min_size=hp["rpn_min_size"],
            min_size_rule=hp["rpn_min_size_rule"],
            score_threshold=hp["rpn_score_threshold"],
            per_level=len(rpn_strides) > 1,
            name="proposal_layer",
        )
        self._build_roi_head(spec, hp)

    def _roi_feature_indices(self, spec, hp):
        """Indices of the feature maps the RoI pooler reads (FPN: P2–P5, not P6)."""
        if hp["roi_levels"] is None:
            return [0]
        return [spec.feature_names.index(name) for name in hp["roi_levels"]]

    def _build_roi_head(self, spec, hp):
        self.roi_feature_indices = self._roi_feature_indices(spec, hp)
        self.roi_feature_names = tuple(spec.feature_names[i] for i in self.roi_feature_indices)
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
        elif hp["roi_pooling"] == "pool":
            self.roi_pooler = RoIPooling((pool, pool), 1.0 / strides[0], name="roi_pooler")
        else:
            raise ValueError(f"roi_pooling must be 'pool' or 'align', got {hp['roi_pooling']!r}")
        channels = spec.channels[self.roi_feature_indices[0]]
        if spec.roi_head == "res5":
            self.box_head = Res5BoxHead(spec.res5, name="box_head")
            head_dim = spec.res5.output.shape[-1]
        elif hp["roi_head_type"] == "conv_fc":
            # 4conv1fc (torchvision fasterrcnn_resnet50_fpn_v2): 3×3 conv + BN + ReLU per entry of
            # roi_head_convs, then one FC of roi_head_dim.
            from rcnn_zoo.heads.conv_fc import ConvFCBoxHead  # noqa: PLC0415

            convs = hp["roi_head_convs"] if hp["roi_head_convs"] is not None else (256,) * 4
            self.box_head = ConvFCBoxHead(
                tuple(convs), (hp["roi_head_dim"],), dropout=hp["roi_head_dropout"], name="box_head"
            )
            head_dim = hp["roi_head_dim"]
        elif hp["roi_head_type"] == "fc":
            self.box_head = FCBoxHead(hp["roi_head_dim"], hp["roi_head_dropout"], name="box_head")
            head_dim = hp["roi_head_dim"]
        else:
            raise ValueError(f"roi_head_type must be 'fc' or 'conv_fc', got {hp['roi_head_type']!r}")
        self.box_head.build((None, pool, pool, channels))
        self.box_predictor = BoxPredictor(self.num_classes, name="box_predictor")
        self.box_predictor.build((None, head_dim))
        self.built = True

    # ------------------------------------------------------------------ forward
    def call(self, images, training=False, ground_truth=None):
        """Forward pass. With ``ground_truth`` (training/evaluation) RoIs are sampled against it
        and the raw outputs needed by the losses are returned; without it, detections.

        ``images``: ``[B,H,W,3]``, a ragged ``[B,(H),(W),3]`` batch, or ``{"images": [B,H,W,3],
        "image_sizes": [B,2]}`` for a padded batch of images of different sizes.
        """
        images, image_sizes = unpack_images(images)
        normalized, resized_sizes, scale = self.preprocess(images, image_sizes)
        features = self.backbone(normalized, training=training)
        levels = [features[name] for name in self.rpn_feature_names]

        anchors = self.anchor_generator(levels, image_shape=tf.shape(normalized)[1:3])
        logits, deltas, level_logits, level_deltas = self.rpn_head(levels)
        per_level = len(levels) > 1
        proposals = self.proposal_layer(
            level_logits if per_level else logits,
            level_deltas if per_level else deltas,
            anchors if per_level else anchors[0],
            # Each image's own resized size (proposals are clipped to it) and scale (the
            # py-faster-rcnn rule measures rpn_min_size in original-image pixels).
            image_shape=tf.concat([tf.cast(resized_sizes, tf.float32), scale[:, :1]], axis=1),
            training=training,
        )
        proposal_valid = tf.sequence_mask(
            proposals["num_valid"], tf.shape(proposals["boxes"])[1]
        )
        if ground_truth is None:
            rois, roi_valid = proposals["boxes"], proposal_valid
        else:
            gt_boxes, gt_labels = self.prepare_ground_truth(ground_truth, image_sizes, resized_sizes)
            sampled = self._sample_training_rois(proposals["boxes"], proposal_valid, gt_boxes, gt_labels)
            rois, roi_valid = sampled["rois"], sampled["labels"] >= 0
        roi_levels = [features[name] for name in self.roi_feature_names]
        class_logits, box_deltas = self._roi_head(roi_levels, rois, training)
        if ground_truth is not None:
            return {
                "anchors": tf.concat(anchors, axis=0),
                "rpn_logits": logits,
                "rpn_deltas": deltas,
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

    def _sample_training_rois(self, proposals, proposal_valid, gt_boxes, gt_labels):
        """RoIs for the detection head during training: Fast R-CNN's balanced sampling."""
        return sample_rois(
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

    def _roi_head(self, roi_levels, rois, training):
        """RoIs ``[B,R,4]`` on ``roi_levels`` → logits ``[B,R,C+1]``, deltas ``[B,R,C+1,4]``."""
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
        """``rpn_cls``, ``rpn_box`` (targets from the anchors of this pass) and ``cls``, ``box``
        (targets from the RoIs sampled in this pass)."""
        targets = rpn_targets(
            y_pred["anchors"],
            y_pred["gt_boxes"],
            y_pred["gt_labels"],
            positive_threshold=self.hp["rpn_positive_iou"],
            negative_threshold=self.hp["rpn_negative_iou"],
            num_samples=self.hp["rpn_batch_size_per_image"],
            positive_fraction=self.hp["rpn_positive_fraction"],
        )
        fns = self.loss_functions
        return {
            "rpn_cls": fns["rpn_objectness_loss"](targets, y_pred["rpn_logits"]),
            "rpn_box": fns["rpn_box_loss"](targets, y_pred["rpn_deltas"]),
            "cls": fns["classification_loss"](y_pred["roi_targets"], y_pred["class_logits"]),
            "box": fns["box_loss"](y_pred["roi_targets"], y_pred["box_deltas"]),
        }

    # ------------------------------------------------------------------ config
    def get_config(self):
        config = super().get_config()
        for key in ("image_min_size", "image_max_size", "resize_rounding", "size_divisible"):
            config.pop(key)  # hyperparameters: serialised through self._given
        config.update(
            {
                "backbone": self.backbone_name,
                "backbone_weights": None,  # weights travel with the saved model, not re-downloaded
                "weights": None,
            }
        )
        config["roi_pooling"] = None
        config.update(self._given)
        return config
