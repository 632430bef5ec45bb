"""What every two-stage detector shares: presets and arguments, the image rule, the backbone
pass, and merging the named losses of its stages (the Keras protocol is in ``protocol.py``, input
and output conversion in ``inputs.py``).

    images → preprocess (resize, normalise, pad) → backbone → [RegionProposalNetwork] → RoI head

Shapes: B images, G ground-truth boxes per image (padded with label −1), D = ``max_detections``.
"""

import inspect

import keras
import tensorflow as tf

from rcnn_zoo.backbones import build_backbone
from rcnn_zoo.models import arguments
from rcnn_zoo.models.inputs import boxes_to_user_format, prepare_ground_truth, unpack_images  # noqa: F401
from rcnn_zoo.models.legacy_layout import read_old_layout
from rcnn_zoo.models.protocol import MultiTaskDetector
from rcnn_zoo.models.preprocessing import check_resize_rounding, full_image_sizes, preprocess_batch
from rcnn_zoo.weights import available_weights, load_detector_weights, preset_arguments


class TwoStageDetector(MultiTaskDetector):
    """Base class: presets and arguments, the image rule, the backbone, the stages' losses.

    Subclasses set ``RPN`` (a :class:`~rcnn_zoo.heads.RegionProposalNetwork` class, or ``None``
    when proposals are given) and ``ROI_HEAD`` (a :class:`~rcnn_zoo.heads.roi_heads.RoIHead`
    class), build them in :meth:`build_stages`, and implement ``call(inputs, training,
    ground_truth)``. Each module computes its own named losses; :meth:`compute_losses` merges them.

    Args:
        num_classes: number of foreground classes; labels are ``0 … num_classes−1``. The
            background class is internal (head index 0), unlike torchvision where label 0 is
            background and users must add one. Taken from the preset with ``weights=<name>``.
        backbone: backbone name (see :func:`rcnn_zoo.backbones.build_backbone`); default
            ``DEFAULT_BACKBONE``.
        weights: ``None``, a registered preset name (``rcnn_zoo.weights.available_weights(
            PRESET_DETECTOR)``) or a ``.weights.h5`` / ``.keras`` file. A preset (and a
            ``.keras`` file) builds its model exactly; arguments passed with it override it
            (``num_classes=N``: the fine-tuning start, every layer but the predictor loaded).
        backbone_weights: ``None`` (random) or ``"imagenet"``.
        bounding_box_format: format of boxes in targets and predictions, any format
            ``keras.utils.bounding_boxes`` knows (``"xyxy"``, ``"yxyx"``, ``"xywh"``, …), in
            pixels of the images given to the model.
        class_names: optional names, kept in the config for drawing and evaluation.
        score_threshold, nms_threshold, max_detections: test-time post-processing.
        **hyperparameters: prefixed keywords of the modules (``rpn_*``, ``anchor_*``, ``roi_*``)
            and the image rule (``image_min_size``, ``image_max_size`` — ``None`` keeps the
            input size —, ``resize_rounding``, ``size_divisible``); see
            :mod:`rcnn_zoo.models.arguments` for where each lives and which default wins, and
            :meth:`accepted_hyperparameters`.
    """

    LOSS_NAMES = ()
    # Registry entries with this "detector" field are this class's presets (weights="name").
    PRESET_DETECTOR = None
    DEFAULT_BACKBONE = None
    RPN = None
    ROI_HEAD = None
    # The detector's paper where it differs from its modules' (plain data, detector keywords).
    PAPER_DEFAULTS = {}
    # The detector's paper where it holds whatever the backbone's defaults say.
    OVER_BACKBONE_DEFAULTS = {}
    IMAGE_RULE = {"image_min_size": 800, "image_max_size": 1333, "resize_rounding": "round",
                  "size_divisible": 1, "roi_levels": None}
    NAMED_DEFAULTS = {"bounding_box_format": "xyxy", "score_threshold": 0.05, "nms_threshold": 0.5,
                      "max_detections": 100}
    takes_proposals = False
    AUTOCAST = True  # False: the model casts its inputs itself (proposal pixels stay float32)

    def __init__(
        self,
        num_classes=None,
        backbone=None,
        weights=None,
        backbone_weights=None,
        bounding_box_format=None,
        class_names=None,
        score_threshold=None,
        nms_threshold=None,
        max_detections=None,
        **hyperparameters,
    ):
        named = dict(num_classes=num_classes, backbone=backbone, bounding_box_format=bounding_box_format,
                     class_names=class_names, score_threshold=score_threshold, nms_threshold=nms_threshold,
                     max_detections=max_detections)
        named, given, layer_kwargs = self.resolve_arguments(weights, named, hyperparameters)
        if not self.AUTOCAST:
            layer_kwargs.setdefault("autocast", False)
        super().__init__(**layer_kwargs)
        num_classes, class_names = named["num_classes"], named["class_names"]
        if int(num_classes) < 1:
            raise ValueError(f"num_classes counts foreground classes and must be ≥ 1, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but num_classes is {num_classes}")
        spec = self.build_backbone_spec(named["backbone"], backbone_weights)
        hp = arguments.resolve(self.hyperparameter_defaults(), dict(spec.defaults, **self.OVER_BACKBONE_DEFAULTS), given)
        self.num_classes = int(num_classes)
        self.bounding_box_format = named["bounding_box_format"]
        self.class_names = list(class_names) if class_names is not None else None
        self.score_threshold = float(named["score_threshold"])
        self.nms_threshold = float(named["nms_threshold"])
        self.max_detections = int(named["max_detections"])
        self.backbone_name = named["backbone"]
        self.backbone_weights = backbone_weights
        self.preprocessing = spec.preprocessing
        self.image_min_size, self.image_max_size = hp["image_min_size"], hp["image_max_size"]
        self.resize_rounding = check_resize_rounding(hp["resize_rounding"])
        self.size_divisible = int(hp["size_divisible"] or 1)
        # Only what the caller passed is serialised: an explicit None (image_min_size=None keeps
        # the input size) must stay distinguishable from "default".
        self._given = given
        self._hyperparameters = hp
        self.loss_trackers = [keras.metrics.Mean(name=name) for name in self.LOSS_NAMES]
        self.backbone = spec.model
        self.feature_names, self.feature_strides = spec.feature_names, spec.strides
        self.build_stages(spec, hp)
        self.built = True
        if weights is not None:
            load_detector_weights(self, weights)

    # ------------------------------------------------------------------ arguments and presets
    @classmethod
    def hyperparameter_defaults(cls):
        """Every hyperparameter this detector takes, with its default (module signatures <
        ``PAPER_DEFAULTS``), under the detector's keywords."""
        defaults = dict(cls.IMAGE_RULE)
        if cls.RPN is not None:
            defaults.update(arguments.prefixed_defaults(cls.RPN, arguments.rpn_keyword))
        defaults.update(arguments.prefixed_defaults(cls.ROI_HEAD, cls.roi_keyword))
        defaults.update(cls.PAPER_DEFAULTS)
        return defaults

    @classmethod
    def accepted_hyperparameters(cls):
        """The keyword names :meth:`__init__` accepts besides its named arguments."""
        return tuple(sorted(cls.hyperparameter_defaults()))

    @staticmethod
    def roi_keyword(argument):
        """RoI-head argument → detector keyword (subclasses rename some, e.g. R-FCN's ``k``)."""
        return arguments.roi_keyword(argument)

    @staticmethod
    def build_backbone_spec(name, weights):
        """The :class:`~rcnn_zoo.backbones.Backbone` for ``name`` (R-FCN overrides this)."""
        return build_backbone(name, weights=weights)

    def build_stages(self, spec, hp):
        """Subclasses: create ``self.rpn`` (if any) and ``self.roi_heads`` from the resolved
        hyperparameters ``hp`` and the backbone ``spec``."""
        raise NotImplementedError

    def rpn_arguments(self, hp):
        return arguments.module_arguments(hp, self.RPN, arguments.rpn_keyword)

    def roi_arguments(self, hp):
        return arguments.module_arguments(hp, self.ROI_HEAD, self.roi_keyword)

    @classmethod
    def from_preset(cls, name, **overrides):
        """The registered model ``name`` with its weights; ``overrides`` replace its arguments.

        Equivalent to ``cls(weights=name, **overrides)`` (Keras-hub style). ``num_classes=N``
        different from the preset's is the fine-tuning start: every layer but the
        class-specific predictor is loaded.
        """
        return cls(weights=name, **overrides)

    @classmethod
    def resolve_arguments(cls, weights, named, hyperparameters):
        """Named arguments and hyperparameters: the preset of ``weights`` < what was passed.

        Returns ``(named, given hyperparameters, layer_kwargs)``; ``name``, ``trainable`` and
        ``dtype`` go to Keras. Unknown hyperparameters raise ``TypeError``.
        """
        given = {k: v for k, v in named.items() if v is not None}
        # roi_pooling=None was a named "not given" before the modules held it (old configs too).
        given.update({k: v for k, v in hyperparameters.items() if not (k == "roi_pooling" and v is None)})
        detector = cls.PRESET_DETECTOR or cls.__name__
        values = preset_arguments(detector, weights, given)
        if values.get("num_classes") is None:
            raise TypeError(
                f"{cls.__name__} needs num_classes (the number of foreground classes), or "
                f"weights=<preset> to build a registered model: {available_weights(detector)}"
            )
        values.setdefault("backbone", cls.DEFAULT_BACKBONE)
        for key, value in cls.NAMED_DEFAULTS.items():
            values.setdefault(key, value)
        named = {key: values.pop(key, None) for key in named}
        layer_kwargs = {k: values.pop(k) for k in ("name", "trainable", "dtype", "autocast") if k in values}
        unknown = set(values) - set(cls.hyperparameter_defaults())
        if unknown:
            raise TypeError(f"{cls.__name__} got unknown arguments {sorted(unknown)}")
        return named, values, layer_kwargs

    # ------------------------------------------------------------------ architecture
    def hyperparameters(self):
        """Every hyperparameter as resolved (paper < backbone < preset < caller), ``{keyword:
        value}``; what weight files are checked against."""
        return dict(self._hyperparameters)

    @property
    def anchors_per_location(self):
        """Anchors per feature-map location of the RPN (``None`` without an RPN)."""
        rpn = getattr(self, "rpn", None)
        return None if rpn is None else rpn.anchors_per_location

    def load_own_variables(self, store):
        read_old_layout(store)  # files saved before the RPN / RoI-head modules
        super().load_own_variables(store)

    # ------------------------------------------------------------------ images
    def preprocess(self, images, image_sizes=None):
        """Raw pixels → ``(normalised padded batch [B,H',W',3], resized sizes [B,2] int32,
        scale [B,2] float32)``; ``scale`` is each image's ``(h'/h, w'/w)``.

        ``image_sizes`` ``[B, 2]`` gives each image's own size in a padded batch (default: all
        fill it). See ``models/preprocessing.py``.
        """
        if image_sizes is None:
            image_sizes = full_image_sizes(images)
        normalised, resized = preprocess_batch(
            images, image_sizes, self.image_min_size, self.image_max_size, self.preprocessing,
            rounding=self.resize_rounding, size_divisible=self.size_divisible,
        )
        scale = tf.cast(resized, tf.float32) / tf.cast(image_sizes, tf.float32)
        return normalised, resized, scale

    def features(self, images, image_sizes, training):
        """Preprocess and run the backbone: ``(feature maps {name: [B,H_l,W_l,C_l]}, normalised
        batch, resized sizes [B,2], scale [B,2])``."""
        normalised, resized_sizes, scale = self.preprocess(images, image_sizes)
        return self.backbone(normalised, training=training), normalised, resized_sizes, scale

    def ground_truth(self, y, image_sizes, resized_sizes):
        """User targets (or ``None``) → ``(gt_boxes, gt_labels)`` in resized pixels (or ``None``)."""
        if y is None:
            return None
        return prepare_ground_truth(y, self.num_classes, self.bounding_box_format, image_sizes, resized_sizes)

    def detections(self, outputs, image_sizes, resized_sizes):
        """The RoI head's test outputs → detections in ``bounding_box_format``, image pixels."""
        detections = self.roi_heads.detect(
            outputs, resized_sizes, self.score_threshold, self.nms_threshold, self.max_detections
        )
        detections["boxes"] = boxes_to_user_format(
            detections["boxes"], self.bounding_box_format, image_sizes, resized_sizes
        )
        return detections

    def compute_losses(self, y_pred):
        """``{loss name: scalar}`` from the outputs of a training forward pass: each module's
        named losses (RPN: ``rpn_cls``, ``rpn_box``; RoI head: ``cls``, ``box``), merged."""
        fns = self.loss_functions
        parts = {}
        if self.RPN is not None:
            parts.update(self.rpn.losses_for(
                y_pred, y_pred["gt_boxes"], y_pred["gt_labels"], fns["rpn_objectness_loss"], fns["rpn_box_loss"]
            ))
        parts.update(self.roi_heads.losses_for(y_pred, fns["classification_loss"], fns["box_loss"]))
        return parts

    # ------------------------------------------------------------------ config
    def get_config(self):
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
            "num_classes": self.num_classes,
            "backbone": self.backbone_name,
            "backbone_weights": None,  # weights travel with the saved model, not re-downloaded
            "weights": None,
            "bounding_box_format": self.bounding_box_format,
            "class_names": self.class_names,
            "score_threshold": self.score_threshold,
            "nms_threshold": self.nms_threshold,
            "max_detections": self.max_detections,
        }
        config.update(self._given)
        return config

    @classmethod
    def from_config(cls, config):
        # Configs written before the modules held every argument carry unset (None) arguments
        # some detectors never had (R-FCN's "roi_pooling"): they meant "default".
        known = set(inspect.signature(TwoStageDetector.__init__).parameters) | set(cls.hyperparameter_defaults())
        known |= {"name", "trainable", "dtype", "autocast"}
        config = {k: v for k, v in config.items() if k in known or v is not None}
        return cls(**config)
