"""Turns RPN outputs into a fixed number of object proposals per image.

Faster R-CNN (Ren et al., 2015, §3.1.2 and py-faster-rcnn's ``proposal_layer.py``): decode the
anchor deltas, clip to the image, drop tiny boxes, keep the ``pre_nms_top_n`` most object-like,
run NMS, keep the ``post_nms_top_n`` best. For FPN (Lin et al., 2017) the top-n before NMS and
the NMS itself run per level, and the best ``post_nms_top_n`` are kept over all levels
(torchvision's ``RegionProposalNetwork.filter_proposals``).

Shapes: ``B`` images, ``N`` anchors in total (``N_l`` on level ``l``), ``P`` = ``post_nms_top_n``.
Boxes are float32 ``xyxy`` in input-image pixels (continuous coordinates).
"""

import keras
import tensorflow as tf

from rcnn_zoo.ops import boxes as box_ops
from rcnn_zoo.ops.nms import batched_nms, gather_padded

# Where and how boxes smaller than ``min_size`` are dropped (the references disagree).
MIN_SIZE_RULES = {
    # name: (before the pre-NMS top-n, strict comparison, min_size in original-image pixels)
    "py-faster-rcnn": (True, False, True),
    "torchvision": (False, False, False),
    "mmdetection": (False, True, False),
}


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class ProposalLayer(keras.layers.Layer):
    """RPN objectness + deltas + anchors → ``post_nms_top_n`` padded proposals per image.

    Steps, per image: decode ``deltas`` against ``anchors`` with ``box_weights`` (log-size
    deltas clamped at ``log(1000/16)``), clip to ``[0, width] × [0, height]``, drop boxes with a
    side ``< min_size`` (times the image scale when one is given), keep the ``pre_nms_top_n``
    highest objectness, greedy NMS at ``nms_threshold`` (IoU strictly above it suppresses),
    keep the first ``post_nms_top_n`` in descending objectness. ``min_size_rule`` says when
    small boxes are dropped: ``"py-faster-rcnn"`` before the top-n (side ``>= min_size`` times
    the image scale), ``"torchvision"`` after it (side ``>= min_size`` resized pixels),
    ``"mmdetection"`` after it (side ``> min_size``, so zero-size boxes go even at 0). A box
    dropped after the top-n leaves its place empty, as in those implementations.

    With ``per_level=True`` the inputs are lists with one entry per FPN level; the pre-NMS top-n
    is per level, NMS is per level (boxes of different levels never suppress each other) and
    ``post_nms_top_n`` is per image over all levels.

    No gradient flows into the proposals (Faster R-CNN's approximate joint training treats them
    as constants).

    Args:
        pre_nms_top_n_train, post_nms_top_n_train: top-n before / after NMS when training
            (py-faster-rcnn: 12000 / 2000).
        pre_nms_top_n_test, post_nms_top_n_test: the same at inference (6000 / 300).
        nms_threshold: IoU threshold of the NMS (0.7).
        min_size: smallest allowed box side in input pixels (py-faster-rcnn: 16 in original
            image pixels, i.e. multiplied by the image scale: pass the scale as a third column
            of ``image_shape``; torchvision: ``1e-3``).
        min_size_rule: ``"py-faster-rcnn"``, ``"torchvision"`` or ``"mmdetection"`` (above).
        score_threshold: proposals whose objectness probability is below it are dropped
            before NMS (torchvision's ``rpn_score_thresh``; 0 keeps all).
        box_weights: ``(wx, wy, ww, wh)`` of the delta coding, ``(1, 1, 1, 1)`` for the RPN.
        per_level: take lists of per-level inputs and run top-n and NMS per level (FPN).
        from_logits: ``objectness`` holds logits (scores are their sigmoid). If ``False`` it
            holds probabilities already (e.g. the foreground column of a 2-way softmax).

    Call arguments:
        objectness: ``[B, N]`` objectness logits (``[B, N, 1]`` is accepted), or a list of
            ``[B, N_l]`` with ``per_level=True``.
        deltas: ``[B, N, 4]`` box deltas ``(dx, dy, dw, dh)``, or a list of ``[B, N_l, 4]``.
        anchors: ``[N, 4]`` anchors (order matching ``objectness``), or a list of ``[N_l, 4]``.
        image_shape: ``[2]`` or ``[B, 2]`` ``(height, width)`` of the input images in pixels,
            or ``[B, 3]`` ``(height, width, scale)`` (py-faster-rcnn's ``im_info``; the scale
            multiplies ``min_size``). Pass a Python tuple only as a keyword argument.
        training: Python bool choosing the train or test top-n (``None``: test).

    Returns:
        A dict, padded to ``P = post_nms_top_n`` rows per image:
        ``"boxes"``: ``[B, P, 4]`` float32 proposals, sorted by descending score; padded rows
        are ``[0, 0, 0, 0]``. ``"scores"``: ``[B, P]`` float32 objectness probability, 0 in
        padded rows. ``"num_valid"``: ``[B]`` int32 number of real proposals per image.

    Hostile inputs: a NaN objectness, or a box that decodes to NaN (NaN delta or anchor), drops
    that candidate; infinite deltas give boxes clipped to the image (``dw``/``dh`` are clamped
    first); ``N = 0`` anchors give no proposals. Every returned box is finite and inside the
    image, every score finite. ``image_shape`` values must be finite and positive, else an
    ``InvalidArgumentError`` naming ``image_shape`` is raised.
    """

    def __init__(
        self,
        pre_nms_top_n_train=12000,
        post_nms_top_n_train=2000,
        pre_nms_top_n_test=6000,
        post_nms_top_n_test=300,
        nms_threshold=0.7,
        min_size=16.0,
        box_weights=(1.0, 1.0, 1.0, 1.0),
        per_level=False,
        from_logits=True,
        min_size_rule="py-faster-rcnn",
        score_threshold=0.0,
        **kwargs,
    ):
        # Boxes in pixels must stay float32 under a mixed-precision policy.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.pre_nms_top_n_train = pre_nms_top_n_train
        self.post_nms_top_n_train = post_nms_top_n_train
        self.pre_nms_top_n_test = pre_nms_top_n_test
        self.post_nms_top_n_test = post_nms_top_n_test
        self.nms_threshold = nms_threshold
        self.min_size = min_size
        self.box_weights = box_weights
        self.per_level = per_level
        self.from_logits = from_logits
        if min_size_rule not in MIN_SIZE_RULES:
            raise ValueError(f"min_size_rule must be one of {sorted(MIN_SIZE_RULES)}, got {min_size_rule!r}")
        self.min_size_rule = min_size_rule
        self.score_threshold = float(score_threshold or 0.0)

    def _image_size_and_min_size(self, image_shape, batch_size):
        """``image_shape`` → height, width and min box side, each ``[B, 1]`` float32."""
        image_shape = tf.cast(tf.convert_to_tensor(image_shape), tf.float32)
        columns = image_shape.shape[-1]
        if image_shape.shape.rank not in (1, 2) or columns not in (2, 3):
            raise ValueError(
                "`image_shape` must be [2], [B, 2] (height, width) or [B, 3] (height, width, "
                f"scale); got shape {image_shape.shape}."
            )
        if image_shape.shape.rank == 1:
            image_shape = image_shape[None, :]
        image_shape = tf.broadcast_to(image_shape, [batch_size, columns])
        # Proposals are clipped to [0, width] x [0, height]: a NaN, infinite, zero or negative
        # size (or scale) would let NaN, unclipped or outside boxes through, so it is an error.
        sizes_ok = tf.reduce_all(tf.math.is_finite(image_shape) & (image_shape > 0))
        check = tf.debugging.Assert(
            sizes_ok,
            ["ProposalLayer: image_shape must hold finite, positive (height, width[, scale]) "
             "values; got image_shape =", image_shape],
            summarize=12,
        )
        with tf.control_dependencies([check]):
            image_shape = tf.identity(image_shape)
        height, width = image_shape[:, 0:1], image_shape[:, 1:2]
        min_size = tf.fill([batch_size, 1], float(self.min_size))
        if columns == 3 and MIN_SIZE_RULES[self.min_size_rule][2]:
            min_size = min_size * image_shape[:, 2:3]
        return height, width, min_size

    def _candidates(self, objectness, deltas, anchors, height, width, min_size, pre_nms_top_n):
        """One level: decode, clip, mask small boxes, take the top-n → ``[B, n, 4]``, ``[B, n]``."""
        objectness = tf.cast(objectness, tf.float32)
        if objectness.shape.rank == 3:
            objectness = tf.squeeze(objectness, axis=-1)
        if not self.from_logits:
            # Work with logits so that the ordering of saturated probabilities is kept.
            eps = 1e-7
            p = tf.clip_by_value(objectness, eps, 1.0 - eps)
            objectness = tf.math.log(p) - tf.math.log1p(-p)
        # A NaN score is no score: -inf drops the candidate (top_k would rank NaN first and let
        # it take a pre-NMS slot).
        objectness = tf.where(tf.math.is_nan(objectness), float("-inf"), objectness)
        deltas = tf.cast(deltas, tf.float32)
        anchors = tf.cast(anchors, tf.float32)

        proposals = box_ops.decode(deltas, anchors[None], weights=self.box_weights)
        proposals = box_ops.clip_to_image(proposals, height, width)
        # Clipping to a finite image leaves only NaN (from a NaN delta or anchor, or inf · 0 on
        # a zero-size anchor): such a box is dropped, and zeroed so that no NaN coordinate
        # reaches NMS or the output.
        finite = tf.reduce_all(tf.math.is_finite(proposals), axis=-1)
        objectness = tf.where(finite, objectness, float("-inf"))
        proposals = tf.where(finite[..., None], proposals, 0.0)
        before_top_n, strict, _ = MIN_SIZE_RULES[self.min_size_rule]
        if before_top_n:
            # Too-small boxes sink below every real box; NMS never keeps a -inf score.
            objectness = self._drop(objectness, proposals, min_size, strict)
        k = tf.minimum(int(pre_nms_top_n), tf.shape(objectness)[1])
        logits, top = tf.math.top_k(objectness, k=k, sorted=True)
        proposals = tf.gather(proposals, top, batch_dims=1)
        if not before_top_n:
            logits = self._drop(logits, proposals, min_size, strict)
        if self.score_threshold > 0:
            logits = tf.where(tf.sigmoid(logits) >= self.score_threshold, logits, float("-inf"))
        return proposals, logits

    @staticmethod
    def _drop(logits, proposals, min_size, strict):
        """``-inf`` for boxes with a side below ``min_size`` (``<=`` it when ``strict``)."""
        w = proposals[..., 2] - proposals[..., 0]
        h = proposals[..., 3] - proposals[..., 1]
        big_enough = (w > min_size) & (h > min_size) if strict else (w >= min_size) & (h >= min_size)
        return tf.where(big_enough, logits, float("-inf"))

    def call(self, objectness, deltas, anchors, image_shape, training=None):
        training = bool(training)
        pre_n = self.pre_nms_top_n_train if training else self.pre_nms_top_n_test
        post_n = int(self.post_nms_top_n_train if training else self.post_nms_top_n_test)

        if self.per_level:
            if not isinstance(objectness, (list, tuple)):
                raise ValueError("With per_level=True pass lists of per-level inputs.")
            levels = list(zip(objectness, deltas, anchors))
        else:
            if isinstance(objectness, (list, tuple)):
                # A single-level model that kept its outputs in a list: join the levels.
                objectness = tf.concat(list(objectness), axis=1)
                deltas = tf.concat(list(deltas), axis=1)
                anchors = tf.concat(list(anchors), axis=0)
            levels = [(objectness, deltas, anchors)]
        levels = [
            tuple(tf.stop_gradient(tf.convert_to_tensor(t)) for t in level) for level in levels
        ]

        batch_size = tf.shape(levels[0][0])[0]
        height, width, min_size = self._image_size_and_min_size(image_shape, batch_size)

        all_boxes, all_logits, all_levels = [], [], []
        for index, (level_objectness, level_deltas, level_anchors) in enumerate(levels):
            level_boxes, level_logits = self._candidates(
                level_objectness, level_deltas, level_anchors, height, width, min_size, pre_n
            )
            all_boxes.append(level_boxes)
            all_logits.append(level_logits)
            all_levels.append(tf.fill(tf.shape(level_logits), index))
        boxes = tf.concat(all_boxes, axis=1)
        logits = tf.concat(all_logits, axis=1)
        groups = tf.concat(all_levels, axis=1) if len(levels) > 1 else None

        keep, num_valid = batched_nms(
            boxes,
            logits,
            max_output_size=post_n,
            iou_threshold=self.nms_threshold,
            score_threshold=float("-inf"),
            groups=groups,
        )
        boxes = gather_padded(boxes, keep, num_valid)
        scores = gather_padded(tf.sigmoid(logits), keep, num_valid)
        return {
            "boxes": tf.stop_gradient(boxes),
            "scores": tf.stop_gradient(scores),
            "num_valid": num_valid,
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pre_nms_top_n_train": self.pre_nms_top_n_train,
                "post_nms_top_n_train": self.post_nms_top_n_train,
                "pre_nms_top_n_test": self.pre_nms_top_n_test,
                "post_nms_top_n_test": self.post_nms_top_n_test,
                "nms_threshold": self.nms_threshold,
                "min_size": self.min_size,
                "box_weights": self.box_weights,
                "per_level": self.per_level,
                "from_logits": self.from_logits,
                "min_size_rule": self.min_size_rule,
                "score_threshold": self.score_threshold,
            }
        )
        return config
