"""What every two-stage detector in rcnn_zoo shares: the Keras training protocol, ground-truth
preparation, image preprocessing and detection post-processing.

Training runs ONE forward pass per step: ``train_step`` calls the model with the ground truth, the
model samples RoIs from its own proposals during that pass, and ``compute_loss`` builds the
remaining targets from the ``y_pred`` it is given. Per-loss values are logged under the names in
``LOSS_NAMES`` next to the total ``loss``.

Shapes: B images, G ground-truth boxes per image (padded with label −1), D = ``max_detections``.
"""

import keras
import tensorflow as tf

from rcnn_zoo import losses as losses_module
from rcnn_zoo.export import export_saved_model
from rcnn_zoo.heads.postprocess import classwise_nms, decode_class_boxes
from rcnn_zoo.ops import boxes as box_ops
from rcnn_zoo.models.preprocessing import check_resize_rounding, full_image_sizes, preprocess_batch
from rcnn_zoo.weights import available_weights, preset_arguments


def _xyxy_factors(scale):
    """Per-image ``(sy, sx)`` ``[B, 2]`` → ``[B, 1, 4]`` ``[sx, sy, sx, sy]`` to scale xyxy boxes."""
    return tf.stack([scale[:, 1], scale[:, 0], scale[:, 1], scale[:, 0]], axis=-1)[:, None, :]


def _columns(sizes):
    """int ``[B, 2]`` ``(height, width)`` → float32 ``([B, 1], [B, 1])``, to broadcast over boxes."""
    sizes = tf.cast(sizes, tf.float32)
    return sizes[:, 0:1], sizes[:, 1:2]


def unpack_images(inputs):
    """The model input → ``(images [B, H, W, 3], image_sizes [B, 2] int32)``.

    Accepted: a tensor (every image fills it); a ``tf.RaggedTensor`` ``[B, (H), (W), 3]`` (padded
    here); a dict with ``"images"`` and optionally ``"image_sizes"`` (each image's ``(height,
    width)`` inside the padded batch, its top-left corner). Other dict keys are the caller's.
    """
    if isinstance(inputs, dict):
        if "images" not in inputs:
            raise ValueError(
                "A dict input needs 'images' [B, H, W, 3] (and optionally 'image_sizes' [B, 2]); "
                f"got keys {sorted(inputs)}"
            )
        images = inputs["images"]
        sizes = inputs.get("image_sizes")
        if isinstance(images, tf.RaggedTensor):
            images, ragged_sizes = ragged_to_padded(images)
            sizes = ragged_sizes if sizes is None else sizes
    elif isinstance(inputs, tf.RaggedTensor):
        images, sizes = ragged_to_padded(inputs)
    else:
        images, sizes = inputs, None
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4 or (images.shape[-1] is not None and images.shape[-1] != 3):
        raise ValueError(f"images must be [B, H, W, 3] RGB, got shape {images.shape}")
    if sizes is None:
        sizes = full_image_sizes(images)
    return images, tf.cast(sizes, tf.int32)


def ragged_to_padded(images):
    """Ragged ``[B, (H), (W), 3]`` → (dense batch padded with zeros, sizes ``[B, 2]`` int32)."""
    heights = images.row_lengths()
    widths = tf.reduce_max(images.row_lengths(axis=2), axis=1)
    return images.to_tensor(), tf.cast(tf.stack([heights, widths], axis=1), tf.int32)


def _batch_size(x):
    """Batch size of the model input (a tensor, or a dict such as Fast R-CNN's)."""
    first = tf.nest.flatten(x)[0]
    return tf.shape(first)[0]


def _num_replicas():
    return tf.distribute.get_strategy().num_replicas_in_sync


class TwoStageDetector(keras.Model):
    """Base class; subclasses implement ``call(images, training, ground_truth)`` and
    ``compute_losses(y_pred) → {name: scalar}`` and list their ``LOSS_NAMES``.

    Args:
        num_classes: number of foreground classes; labels are ``0 … num_classes−1``. The
            background class is internal (head index 0), unlike torchvision where label 0 is
            background and users must add one.
        bounding_box_format: format of boxes in targets and predictions, any format
            ``keras.utils.bounding_boxes`` knows (``"xyxy"``, ``"yxyx"``, ``"xywh"``,
            ``"center_xywh"``, …), in pixels of the images given to the model.
        class_names: optional names, kept in the config for drawing and evaluation.
        image_min_size, image_max_size: images are resized so the shorter side is
            ``image_min_size`` and the longer at most ``image_max_size`` (``None`` disables).
        preprocessing: normalisation mode (see ``models/preprocessing.py``).
        resize_rounding: ``"round"`` (MMDetection, py-faster-rcnn) or ``"floor"``
            (torchvision) for the resized size.
        size_divisible: the resized batch is zero-padded to a multiple of it (FPN: 32).
        score_threshold, nms_threshold, max_detections: test-time post-processing.
    """

    LOSS_NAMES = ()
    # Registry entries with this "detector" field are this class's presets (weights="name").
    PRESET_DETECTOR = None

    def __init__(
        self,
        num_classes,
        bounding_box_format="xyxy",
        class_names=None,
        image_min_size=800,
        image_max_size=1333,
        preprocessing="torch",
        resize_rounding="round",
        size_divisible=1,
        score_threshold=0.05,
        nms_threshold=0.5,
        max_detections=100,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(num_classes) < 1:
            raise ValueError(f"num_classes counts foreground classes and must be ≥ 1, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"class_names has {len(class_names)} names but num_classes is {num_classes}"
            )
        self.num_classes = int(num_classes)
        self.bounding_box_format = bounding_box_format
        self.class_names = list(class_names) if class_names is not None else None
        self.image_min_size = image_min_size
        self.image_max_size = image_max_size
        self.preprocessing = preprocessing
        self.resize_rounding = check_resize_rounding(resize_rounding)
        self.size_divisible = int(size_divisible or 1)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.max_detections = int(max_detections)
        self.loss_trackers = [keras.metrics.Mean(name=name) for name in self.LOSS_NAMES]
        self.losses_by_name = {}

    # ------------------------------------------------------------------ presets
    @classmethod
    def from_preset(cls, name, **overrides):
        """The registered model ``name`` with its weights; ``overrides`` replace its arguments.

        Equivalent to ``cls(weights=name, **overrides)`` (Keras-hub style). ``num_classes=N``
        different from the preset's is the fine-tuning start: every layer but the
        class-specific predictor is loaded. Presets: ``rcnn_zoo.weights.available_weights(
        cls.PRESET_DETECTOR)``.
        """
        return cls(weights=name, **overrides)

    @classmethod
    def resolve_arguments(cls, weights, named, hyperparameters, defaults, known):
        """Constructor arguments: ``defaults`` < the preset of ``weights`` < what was passed.

        Args:
            named: the constructor's named arguments (``None`` = not passed).
            hyperparameters: its keyword arguments (an explicit ``None`` is kept, e.g.
                ``image_min_size=None``); ``name``, ``trainable`` and ``dtype`` go to Keras.
            defaults: defaults of the named arguments; known: the hyperparameter names.
        Returns:
            ``(named, hyperparameters, layer_kwargs)`` dicts.
        """
        given = {k: v for k, v in named.items() if v is not None}
        given.update(hyperparameters)
        detector = cls.PRESET_DETECTOR or cls.__name__
        arguments = preset_arguments(detector, weights, given)
        if arguments.get("num_classes") is None:
            raise TypeError(
                f"{cls.__name__} needs num_classes (the number of foreground classes), or "
                f"weights=<preset> to build a registered model: {available_weights(detector)}"
            )
        for key, value in defaults.items():
            arguments.setdefault(key, value)
        named = {key: arguments.pop(key, None) for key in named}
        layer_kwargs = {k: arguments.pop(k) for k in ("name", "trainable", "dtype") if k in arguments}
        unknown = set(arguments) - set(known)
        if unknown:
            raise TypeError(f"{cls.__name__} got unknown arguments {sorted(unknown)}")
        return named, arguments, layer_kwargs

    # ------------------------------------------------------------------ architecture
    def hyperparameters(self):
        """Every hyperparameter of this model as resolved (paper < backbone < preset < caller),
        ``{name: value}``; what weight files are checked against."""
        return dict(getattr(self, "hp", {}))

    @property
    def anchors_per_location(self):
        """Anchors per feature-map location of the RPN (``None`` without an RPN)."""
        generator = getattr(self, "anchor_generator", None)
        return None if generator is None else generator.num_anchors_per_location[0]

    # ------------------------------------------------------------------ images and targets
    def preprocess(self, images, image_sizes=None):
        """Raw pixels → ``(normalised padded batch [B,H',W',3], resized sizes [B,2] int32,
        scale [B,2] float32)``; ``scale`` is each image's ``(h'/h, w'/w)``.

        ``image_sizes`` ``[B, 2]`` gives each image's own size in a padded batch (default: all
        fill it). See ``models/preprocessing.py``.
        """
        if image_sizes is None:
            image_sizes = full_image_sizes(images)
        normalised, resized = preprocess_batch(
            images,
            image_sizes,
            self.image_min_size,
            self.image_max_size,
            self.preprocessing,
            rounding=self.resize_rounding,
            size_divisible=self.size_divisible,
        )
        scale = tf.cast(resized, tf.float32) / tf.cast(image_sizes, tf.float32)
        return normalised, resized, scale

    def prepare_ground_truth(self, y, image_sizes, resized_sizes):
        """User targets → xyxy boxes in resized-image pixels, labels with invalid boxes = −1.

        ``y = {"boxes": [B,G,4] in bounding_box_format, "labels": [B,G]}`` in each image's own
        pixels (``image_sizes [B,2]``). Boxes are scaled by each image's factors and clipped to
        its resized size (``resized_sizes [B,2]``); boxes left with zero or negative area
        (degenerate, inverted or wholly outside) and labels outside ``[0, num_classes)`` are
        dropped (label −1), and the count is printed so bad data never trains silently.
        """
        if not isinstance(y, dict) or "boxes" not in y or "labels" not in y:
            raise ValueError(
                "Targets must be a dict {'boxes': [B, G, 4], 'labels': [B, G]} "
                f"(labels padded with -1); got {type(y).__name__}"
            )
        boxes = tf.cast(y["boxes"], tf.float32)
        labels = tf.cast(y["labels"], tf.int32)
        height, width = _columns(image_sizes)
        boxes = box_ops.convert_format(
            boxes, self.bounding_box_format, "xyxy", height=height, width=width
        )
        scale = tf.cast(resized_sizes, tf.float32) / tf.cast(image_sizes, tf.float32)
        resized_height, resized_width = _columns(resized_sizes)
        boxes = box_ops.clip_to_image(boxes * _xyxy_factors(scale), resized_height, resized_width)
        finite = tf.reduce_all(tf.math.is_finite(boxes), axis=-1)
        boxes = tf.where(finite[..., None], boxes, 0.0)
        padded = labels < 0
        good = (
            finite
            & (boxes[..., 2] - boxes[..., 0] > 0)
            & (boxes[..., 3] - boxes[..., 1] > 0)
            & (labels < self.num_classes)
        )
        dropped = tf.reduce_sum(tf.cast(~padded & ~good, tf.int32))
        tf.cond(
            dropped > 0,
            lambda: tf.print(
                "rcnn_zoo: dropped", dropped,
                "ground-truth boxes in this batch (zero area, inverted, outside the image, "
                "non-finite, or label >= num_classes)",
            ),
            lambda: tf.no_op(),
        )
        labels = tf.where(good & ~padded, labels, -1)
        return boxes, labels

    def boxes_to_user_format(self, boxes, image_sizes, resized_sizes):
        """xyxy boxes ``[B,D,4]`` in resized pixels → ``bounding_box_format`` in each image's
        own pixels, clipped to it.

        Boxes are multiplied by ``original / resized`` per axis (float32), as torchvision's
        ``resize_boxes`` does.
        """
        ratio = tf.cast(image_sizes, tf.float32) / tf.cast(resized_sizes, tf.float32)
        height, width = _columns(image_sizes)
        boxes = box_ops.clip_to_image(boxes * _xyxy_factors(ratio), height, width)
        return box_ops.convert_format(boxes, "xyxy", self.bounding_box_format, height=height, width=width)

    # ------------------------------------------------------------------ post-processing
    def detect(self, rois, roi_valid, logits, deltas, box_weights, resized_sizes):
        """Per-class boxes and scores → class-wise NMS → padded detections.

        Args:
            rois: ``[B,R,4]`` xyxy resized-image pixels; roi_valid: ``[B,R]`` bool.
            logits: ``[B,R,C+1]``; deltas: ``[B,R,C+1,4]`` (or ``[B,R,4]`` class-agnostic).
            resized_sizes: int ``[B,2]`` each image's resized size; boxes are clipped to it.
        Returns:
            dict ``boxes [B,D,4]`` (xyxy, resized pixels), ``scores [B,D]``, ``labels [B,D]``
            int32 (0…C−1, −1 padding), ``num_detections [B]`` int32.
        """
        probs = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)[..., 1:]
        if deltas.shape.rank == 4:
            deltas = deltas[:, :, 1:, :]  # row 0 (background) is never decoded
        boxes, big_enough = decode_class_boxes(rois, deltas, box_weights, resized_sizes)
        return classwise_nms(
            boxes, probs, roi_valid[..., None] & big_enough,
            self.score_threshold, self.nms_threshold, self.max_detections,
        )

    # ------------------------------------------------------------------ training protocol
    def compile(
        self,
        optimizer=None,
        rpn_objectness_loss=None,
        rpn_box_loss=None,
        classification_loss=None,
        box_loss=None,
        loss_weights=None,
        **kwargs,
    ):
        """Configure training. Every argument has a sensible default.

        Args:
            optimizer: default SGD(lr 0.01, momentum 0.9, weight decay 1e-4, clipnorm 10), the
                papers' optimiser (the clip guards the first steps from scratch).
            rpn_objectness_loss, rpn_box_loss, classification_loss, box_loss: Loss instances or
                names to replace the defaults (see ``rcnn_zoo.losses``).
            loss_weights: optional ``{loss name: weight}`` over ``LOSS_NAMES`` (default 1 each;
                the logged per-loss values stay unweighted). Used by alternating training.
            **kwargs: passed to ``keras.Model.compile`` (``metrics``, ``jit_compile``, …).
                ``loss`` is not accepted: the detector's losses are the four above.
        """
        if "loss" in kwargs and kwargs["loss"] is not None:
            raise ValueError(
                "Detectors compute their own multi-task loss; pass rpn_objectness_loss=, "
                "rpn_box_loss=, classification_loss= or box_loss= instead of loss="
            )
        kwargs.pop("loss", None)
        if optimizer is None:
            optimizer = keras.optimizers.SGD(
                learning_rate=0.01, momentum=0.9, weight_decay=1e-4, global_clipnorm=10.0
            )
        defaults = {
            "rpn_objectness_loss": losses_module.RPNObjectnessLoss(name="rpn_objectness_loss"),
            "rpn_box_loss": losses_module.SmoothL1BoxLoss(beta=1.0 / 9.0, name="rpn_box_loss"),
            "classification_loss": losses_module.DetectionClassificationLoss(),
            "box_loss": losses_module.DetectionBoxLoss(beta=1.0),
        }
        given = {
            "rpn_objectness_loss": rpn_objectness_loss,
            "rpn_box_loss": rpn_box_loss,
            "classification_loss": classification_loss,
            "box_loss": box_loss,
        }
        unknown = set(loss_weights or {}) - set(self.LOSS_NAMES)
        if unknown:
            raise ValueError(f"loss_weights names {sorted(unknown)} are not in {self.LOSS_NAMES}")
        self.loss_weights_by_name = {name: 1.0 for name in self.LOSS_NAMES}
        self.loss_weights_by_name.update({k: float(v) for k, v in (loss_weights or {}).items()})
        self.loss_functions = {
            key: keras.losses.get(value) if value is not None else defaults[key]
            for key, value in given.items()
        }
        # NMS and the custom RoI ops have no XLA kernels: never let "auto" pick XLA on a GPU.
        kwargs.setdefault("jit_compile", False)
        super().compile(optimizer=optimizer, **kwargs)

    def get_compile_config(self):
        config = super().get_compile_config() or {}
        if getattr(self, "loss_functions", None):
            config = dict(config)
            for key, loss in self.loss_functions.items():
                config[key] = keras.saving.serialize_keras_object(loss)
            config["loss_weights"] = dict(self.loss_weights_by_name)
        return config

    def compile_from_config(self, config):
        config = dict(config)
        for key in ("rpn_objectness_loss", "rpn_box_loss", "classification_loss", "box_loss"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        optimizer = config.pop("optimizer", None)
        if optimizer is not None:
            optimizer = keras.saving.deserialize_keras_object(optimizer)
        allowed = {"rpn_objectness_loss", "rpn_box_loss", "classification_loss", "box_loss",
                   "loss_weights",
                   "metrics", "jit_compile", "steps_per_execution", "run_eagerly"}
        self.compile(optimizer=optimizer, **{k: v for k, v in config.items() if k in allowed and v is not None})
        if self.built and hasattr(self.optimizer, "build"):
            self.optimizer.build(self.trainable_variables)

    def compute_losses(self, y_pred):
        """Subclasses: ``{loss name: scalar}`` from the outputs of a training forward pass."""
        raise NotImplementedError

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Total multi-task loss; targets come from ``y_pred`` (its ground truth and samples).

        Each part is logged as a mean over the epoch's images, weighted by batch size exactly
        as Keras weights ``loss``, so the logged parts add up to the logged ``loss``.
        """
        del y, sample_weight, training
        if not getattr(self, "loss_functions", None):
            raise RuntimeError("Call model.compile() before fit/evaluate.")
        parts = self.compute_losses(y_pred)
        weights = getattr(self, "loss_weights_by_name", {})
        total = tf.add_n(
            [tf.cast(v, tf.float32) * weights.get(name, 1.0) for name, v in parts.items()]
        )
        replicas = float(_num_replicas())
        # The weight depends on the batch, so a step whose input ran out (Keras runs one at the
        # end of an epoch of unknown length) updates nothing; a constant weight of 1 would be
        # counted before the failed read aborts the step and shrink the mean to n/(n+1).
        images = tf.cast(_batch_size(x), tf.float32) if x is not None else None
        for tracker in self.loss_trackers:
            # Keras Loss objects already divide by the replica count; log per-batch values.
            tracker.update_state(parts[tracker.name] * replicas, sample_weight=images)
        if self.losses:
            total = total + tf.add_n([tf.cast(tf.reduce_sum(l), tf.float32) for l in self.losses]) / replicas
        return total

    def _forward_with_targets(self, data, training):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if y is None:
            raise ValueError(
                "fit/evaluate need targets: a dataset of (images, {'boxes': ..., 'labels': ...})"
            )
        y_pred = self(x, training=training, ground_truth=y)
        loss = self._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        return x, y, y_pred, sample_weight, loss

    def train_step(self, data):
        with tf.GradientTape() as tape:
            x, y, y_pred, sample_weight, loss = self._forward_with_targets(data, training=True)
            self._loss_tracker.update_state(loss * _num_replicas(), sample_weight=_batch_size(x))
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def test_step(self, data):
        x, y, y_pred, sample_weight, loss = self._forward_with_targets(data, training=False)
        self._loss_tracker.update_state(loss * _num_replicas(), sample_weight=_batch_size(x))
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        # Compiled metrics expect plain tensors; detectors log their losses (and mAP through
        # rcnn_zoo.evaluation.MeanAveragePrecisionCallback), so only report the trackers.
        return {m.name: m.result() for m in self.metrics}

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self(x, training=False)

    # ------------------------------------------------------------------ export
    def export(self, filepath, format="tf_saved_model", verbose=True, input_type="image_tensor", **kwargs):
        """Write a SavedModel for TF Serving (Keras 3's export entry point).

        Only stock TensorFlow ops are used (the pure-TF RoI ops), so stock TF Serving loads it.
        See :func:`rcnn_zoo.export.export_saved_model` for ``input_type`` and the signature.
        """
        if format != "tf_saved_model":
            raise ValueError(f"rcnn_zoo detectors export format 'tf_saved_model' only, got {format!r}")
        return export_saved_model(self, filepath, input_type=input_type, verbose=verbose, **kwargs)

    # ------------------------------------------------------------------ config
    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
            "num_classes": self.num_classes,
            "bounding_box_format": self.bounding_box_format,
            "class_names": self.class_names,
            "image_min_size": self.image_min_size,
            "image_max_size": self.image_max_size,
            "resize_rounding": self.resize_rounding,
            "size_divisible": self.size_divisible,
            "score_threshold": self.score_threshold,
            "nms_threshold": self.nms_threshold,
            "max_detections": self.max_detections,
        }
