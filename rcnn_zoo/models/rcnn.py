"""R-CNN (Girshick, Donahue, Darrell, Malik 2014, "Rich feature hierarchies for accurate object
detection and semantic segmentation"), figure 1:

    image → region proposals: selective search, on the CPU       rcnn_inference.py
          → every region warped to S×S with p pixels of context   ops/warp.py (appendix A)
          → CNN per region: backbone → pool5 → fc6 → fc7          region_features
          → per-class linear SVMs on fc7 → scores [K, C]          heads/rcnn_head.py
            per-class box regressors on pool5 → deltas [K, C, 4]  (appendix C)
          → regression, clipping, class-wise NMS (IoU 0.3)        heads/postprocess.py

Trained stage by stage (rcnn_training.py: fine-tuning, SVMs with hard negative mining, box
regressors) on candidate regions of a training set (rcnn_region_data.py, targets/regions.py)::

    model = RCNN(num_classes=20, backbone="vgg16", backbone_weights="imagenet")
    regions = model.prepare_regions(images, boxes, labels)        # selective search, overlaps
    model.fine_tune(model.fine_tune_dataset(regions, num_batches=20000), epochs=1)
    model.train_svms(regions)
    model.train_box_regressors(regions)
    detections = model.predict(test_images)                       # selective search inside

Not a :class:`~rcnn_zoo.models.detector.TwoStageDetector` (one multi-task loss per image batch,
one forward pass): R-CNN trains three objectives on different inputs (warped regions, cached fc7,
cached pool5) and its proposals come from CPU code, so its stages call ``fit`` themselves and
its ``predict`` is a Python loop.

Shapes: ``B`` images, ``R`` proposals of an image, ``K`` regions in a flat list (of any images),
``S`` = ``warp_size``, ``C`` classes, ``P`` pool5, ``F`` fc7 features, ``D`` = ``max_detections``.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from rcnn_zoo.backbones import build_backbone
from rcnn_zoo.heads import FCBoxHead
from rcnn_zoo.heads.postprocess import classwise_nms, decode_class_boxes
from rcnn_zoo.heads.rcnn_head import RCNNHead, check_classifier
from rcnn_zoo.models import arguments, preprocessing
from rcnn_zoo.models.rcnn_presets import ARGUMENTS, BACKBONE_DEFAULTS, CONFIG_ATTRIBUTES, GENERIC_DEFAULTS
from rcnn_zoo.models.rcnn_inference import RCNNInference
from rcnn_zoo.models.rcnn_training import RCNNTraining
from rcnn_zoo.ops import boxes as box_ops
from rcnn_zoo.ops.warp import pad_for_warp, warp_padded, warp_regions
from rcnn_zoo.weights import load_detector_weights

@keras.saving.register_keras_serializable(package="rcnn_zoo")
class RCNN(RCNNTraining, RCNNInference, keras.Model):
    """R-CNN as a ``keras.Model``: train with the stage methods, ``predict`` on raw images.

    Labels are ``0 … num_classes−1`` (background is internal: head index 0 of the fine-tuning
    softmax). ``predict`` returns ``{"boxes" [B,D,4], "scores" [B,D], "labels" [B,D] (−1
    padding), "num_detections" [B]}`` like the other detectors; with ``classifier="svm"`` the
    scores are SVM margins (unbounded, ranked as in the paper), with ``"softmax"``
    probabilities.

    Args:
        num_classes: foreground classes ``C``.
        backbone: ``"vgg16"``, ``"tiny"`` or another single-level backbone name (ResNet C4:
            conv5 then global average pooling form pool5). FPN backbones are refused.
        backbone_weights: ``None`` or ``"imagenet"`` (fc6/fc7 start random either way).
        classifier: ``"svm"`` (the paper's) or ``"softmax"`` (the fine-tuned C+1 softmax,
            appendix B's ablation) scores regions at test time.
        warp_size: ``S``; default 224 for vgg16 (VGG's input, pool5 7×7) and ResNet, 64 for
            tiny, 227 (the paper's AlexNet) otherwise.
        context_padding: ``p`` pixels of context around the box at the warped size (16).
        bounding_box_format: format of boxes given (targets, proposals) and returned.
        class_names: optional ``num_classes`` names.
        score_threshold: detections need a score above it; default −1 for SVM margins (the
            negatives' side of the margin), 0.05 for softmax probabilities.
        nms_threshold: class-wise NMS IoU threshold (0.3, the paper's).
        max_detections: ``D``.
        fc_dim, fc_dropout: width and dropout of fc6/fc7 (vgg16: 4096, 0.5; tiny: 256, 0;
            ResNet: 1024, 0).
        proposal_mode, max_proposals: selective search at predict time (``"fast"``, 2000).
        region_batch_size: regions per forward pass in ``predict`` and feature extraction.
        box_weights: ``(wx, wy, ww, wh)`` of the regression targets; ``(1, 1, 1, 1)`` is the
            paper's appendix C.
        weights: ``None``, a preset name or a ``.keras`` / ``.weights.h5`` file; a preset or
            ``.keras`` file also sets every argument left at its default (``num_classes`` too).
    """

    def __init__(
        self,
        num_classes=None,
        backbone="vgg16",
        backbone_weights=None,
        classifier="svm",
        warp_size=None,
        context_padding=16,
        bounding_box_format="xyxy",
        class_names=None,
        score_threshold=None,
        nms_threshold=0.3,
        max_detections=100,
        fc_dim=None,
        fc_dropout=None,
        proposal_mode="fast",
        max_proposals=2000,
        region_batch_size=None,
        box_weights=(1.0, 1.0, 1.0, 1.0),
        weights=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        passed = {k: v for k, v in locals().items() if k in ARGUMENTS}
        a = arguments.with_weights(type(self), "RCNN", weights, passed)
        if a["num_classes"] is None or int(a["num_classes"]) < 1:
            raise ValueError(f"num_classes counts foreground classes and must be ≥ 1, got {a['num_classes']}")
        if a["class_names"] is not None and len(a["class_names"]) != a["num_classes"]:
            raise ValueError(f"class_names has {len(a['class_names'])} names but num_classes is {a['num_classes']}")
        check_classifier(a["classifier"])
        defaults = BACKBONE_DEFAULTS.get(a["backbone"], GENERIC_DEFAULTS)
        for name in ("num_classes", "max_detections"):
            setattr(self, name, int(a[name]))
        for name in ("bounding_box_format", "score_threshold", "proposal_mode", "max_proposals"):
            setattr(self, name, a[name])
        for name in ("warp_size", "fc_dim", "region_batch_size"):
            setattr(self, name, int(a[name] or defaults[name]))
        self.fc_dropout = float(a["fc_dropout"] if a["fc_dropout"] is not None else defaults["fc_dropout"])
        self.backbone_name, self.backbone_weights = a["backbone"], a["backbone_weights"]
        self.context_padding = float(a["context_padding"])
        if not 0 <= self.context_padding < self.warp_size / 2:
            raise ValueError(f"context_padding must be in [0, warp_size/2), got {a['context_padding']}")
        self.class_names = list(a["class_names"]) if a["class_names"] is not None else None
        self.nms_threshold = float(a["nms_threshold"])
        self.box_weights = tuple(float(w) for w in a["box_weights"])
        self._build_cnn(build_backbone(self.backbone_name, weights=self.backbone_weights))
        self._build_head(a["classifier"])
        self._functions = {}
        self.built = True
        if weights is not None:
            load_detector_weights(self, weights)

    def hyperparameters(self):
        """The architecture and settings as built (what weight files are checked against)."""
        return {name: getattr(self, name) for name in CONFIG_ATTRIBUTES}

    def _build_cnn(self, spec):
        """backbone → pool5 → fc6 → fc7 on ``S × S`` regions; sets ``pool5_shape``."""
        if len(spec.feature_names) != 1:
            raise ValueError(
                f"R-CNN runs the CNN on each warped region and needs a single-level backbone; "
                f"{self.backbone_name!r} has levels {spec.feature_names}"
            )
        self.preprocessing = spec.preprocessing
        self.fill_pixel = preprocessing.mean_pixel(spec.preprocessing)
        self.backbone = spec.model
        self.feature_name = spec.feature_names[0]
        self.res5 = spec.res5 if spec.roi_head == "res5" else None
        # pool5: VGG's 2×2 max pooling after conv5 (the backbones stop before it), or for
        # ResNet C4 the conv5 stage and global average pooling.
        self.pool5 = layers.MaxPooling2D(2, name="pool5") if self.res5 is None else None
        feature = self.backbone.compute_output_spec(
            keras.KerasTensor((None, self.warp_size, self.warp_size, 3))
        )[self.feature_name]
        if self.res5 is None:
            pooled_shape = self.pool5.compute_output_shape(feature.shape)
        else:
            expected = tuple(self.res5.input_shape[1:3])
            if None not in expected and expected != tuple(feature.shape[1:3]):
                raise ValueError(
                    f"{self.backbone_name!r}'s conv5 stage takes {expected} conv4 maps; warp_size "
                    f"{self.warp_size} gives {tuple(feature.shape[1:3])} (use 224)"
                )
            pooled_shape = (None, 1, 1, self.res5.output_shape[-1])
        if any(d is not None and d < 1 for d in pooled_shape[1:3]):
            raise ValueError(f"warp_size {self.warp_size} is too small for {self.backbone_name!r}")
        self.pool5_shape = tuple(int(d) for d in pooled_shape[1:])
        self.fc_head = FCBoxHead(self.fc_dim, self.fc_dropout, name="fc_head")  # fc6, fc7
        self.fc_head.build((None,) + self.pool5_shape)

    def _build_head(self, classifier):
        head = RCNNHead(self.num_classes, classifier, name="rcnn_head")
        head.build((None, int(np.prod(self.pool5_shape))), (None, self.fc_dim))
        # Saved files name variables by attribute, or (after "layers") by class in the layer list:
        # so these stay the model's own, tracked before the head: older files (SVMs at layers/dense_1) load.
        self.cls_score, self.svm, self.bbox_regressor = head.cls_score, head.svm, head.bbox_regressor
        self.rcnn_head = head

    @property
    def classifier(self):
        """``"svm"`` or ``"softmax"``: which head part scores detections (settable)."""
        return self.rcnn_head.classifier

    @classifier.setter
    def classifier(self, value):
        self.rcnn_head.classifier = check_classifier(value)

    # ------------------------------------------------------------------ the figure
    def warp(self, images, boxes, box_indices, image_sizes=None):
        """:func:`~rcnn_zoo.ops.warp.warp_regions` with this model's ``S``, ``p`` and mean pixel:
        boxes ``[K,4]`` xyxy of ``images [B,H,W,3]`` → ``[K,S,S,3]`` raw pixels."""
        return warp_regions(images, boxes, box_indices, self.warp_size, self.context_padding,
                            self.fill_pixel, image_sizes)

    def _warp_padded(self, padded, boxes, box_indices, image_sizes=None):
        """:meth:`warp` on images prepared once by :func:`~rcnn_zoo.ops.warp.pad_for_warp`."""
        return warp_padded(padded, boxes, box_indices, self.warp_size, self.context_padding,
                           self.fill_pixel, image_sizes)

    def region_features(self, regions, training=False):
        """The CNN: warped regions ``[K,S,S,3]`` raw pixels → ``(pool5 [K,P], fc7 [K,F])`` float32."""
        x = preprocessing.normalize(tf.cast(regions, tf.float32), self.preprocessing)
        feature = self.backbone(x, training=training)[self.feature_name]
        if self.res5 is None:
            pooled = self.pool5(feature)
        else:
            pooled = tf.reduce_mean(self.res5(feature, training=training), axis=[1, 2], keepdims=True)
        fc7 = self.fc_head(pooled, training=training)
        flat = tf.reshape(pooled, [tf.shape(pooled)[0], -1])
        return tf.cast(flat, tf.float32), tf.cast(fc7, tf.float32)

    def classify(self, fc7):
        """fc7 ``[K,F]`` → class scores ``[K,C]`` (SVM margins or softmax probabilities)."""
        return self.rcnn_head.classify(fc7)

    def regress(self, pool5):
        """pool5 ``[K,P]`` → class-specific deltas ``[K,C,4]``."""
        return self.rcnn_head.regress(pool5)

    def score_regions(self, images, boxes, box_indices, image_sizes=None):
        """Boxes ``[K,4]`` xyxy of ``images [B,H,W,3]`` → ``(scores [K,C], deltas [K,C,4])``:
        warp → CNN → SVMs (or softmax) and box regressors."""
        padded = pad_for_warp(images, self.fill_pixel, image_sizes)
        return self._score_padded(padded, boxes, box_indices, image_sizes)

    def _score_padded(self, padded, boxes, box_indices, image_sizes=None):
        pool5, fc7 = self.region_features(self._warp_padded(padded, boxes, box_indices, image_sizes))
        return self.rcnn_head(pool5, fc7)

    def postprocess(self, proposals, scores, deltas, height, width):
        """Regress, clip and suppress, as every detector does (:mod:`rcnn_zoo.heads.postprocess`):
        proposals ``[B,R,4]`` xyxy (rows without area are padding), ``scores [B,R,C]``,
        ``deltas [B,R,C,4]`` → detections in ``bounding_box_format`` clipped to the scalar
        ``height × width``."""
        proposals = tf.cast(proposals, tf.float32)
        height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
        valid = (proposals[..., 2] > proposals[..., 0]) & (proposals[..., 3] > proposals[..., 1])
        sizes = tf.tile(tf.stack([height, width])[None], [tf.shape(proposals)[0], 1])
        boxes, big_enough = decode_class_boxes(proposals, deltas, self.box_weights, sizes)
        threshold = self.score_threshold
        detections = classwise_nms(
            boxes, scores, valid[..., None] & big_enough,
            self.rcnn_head.default_score_threshold if threshold is None else float(threshold),
            self.nms_threshold, self.max_detections,
        )
        detections["boxes"] = box_ops.convert_format(
            detections["boxes"], "xyxy", self.bounding_box_format, height=height, width=width
        )
        return detections

    def call(self, inputs, training=False):
        """Detections on given proposals, all in one graph.

        ``inputs = {"images": [B,H,W,3] raw pixels, "proposals": [B,R,4]}`` (proposals in
        ``bounding_box_format``, all-zero rows are padding). Every proposal of the batch is
        warped at once, so memory grows with ``B·R·S²``; ``predict`` runs selective search and
        chunks the regions instead.
        """
        if not isinstance(inputs, dict) or "images" not in inputs or "proposals" not in inputs:
            raise ValueError(
                "RCNN is called on {'images': [B,H,W,3], 'proposals': [B,R,4]}; use "
                "model.predict(images) to run selective search on raw images"
            )
        images = tf.cast(inputs["images"], tf.float32)
        shape = tf.shape(images)
        height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
        proposals = self._to_xyxy(inputs["proposals"], height, width)
        batch, num = tf.shape(proposals)[0], tf.shape(proposals)[1]
        owners = tf.repeat(tf.range(batch), num)  # the image of each flattened proposal
        scores, deltas = self.score_regions(images, tf.reshape(proposals, [-1, 4]), owners)
        scores = tf.reshape(scores, [batch, num, self.num_classes])
        deltas = tf.reshape(deltas, [batch, num, self.num_classes, 4])
        return self.postprocess(proposals, scores, deltas, height, width)

    def _to_xyxy(self, boxes, height, width):
        """Boxes in ``bounding_box_format`` → xyxy pixels; all-zero (padding) rows stay zero."""
        boxes = tf.cast(boxes, tf.float32)
        padding = tf.reduce_all(tf.equal(boxes, 0.0), axis=-1, keepdims=True)
        xyxy = box_ops.convert_format(boxes, self.bounding_box_format, "xyxy", height=height, width=width)
        return tf.where(padding, 0.0, xyxy)

    # ------------------------------------------------------------------ saving
    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in CONFIG_ATTRIBUTES})
        config.update({
            "backbone": self.backbone_name,
            "backbone_weights": None,  # weights travel with the saved model, not re-downloaded
            "box_weights": list(self.box_weights),
        })
        return config
