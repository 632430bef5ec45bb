"""Anchors (reference boxes) of the Region Proposal Network.

Faster R-CNN (Ren et al., 2015, §3.1.1) places ``A`` anchors, one per (size, aspect ratio) pair,
at every cell of a stride-``s`` feature map; FPN (Lin et al., 2017, §4.1) uses one size per
pyramid level. Shapes: ``H, W`` feature-map height and width of a level, ``A`` anchors per
location. Anchors are float32 ``xyxy`` in input-image pixels with continuous coordinates
(``x2 - x1`` is the width). An aspect ratio is ``height / width``.
"""

import math

import keras
import numpy as np
import tensorflow as tf

CONVENTIONS = ("py-faster-rcnn", "torchvision", "detectron2")
STRIDE_RULES = ("nominal", "image_over_grid")


def _per_level(values, num_levels, name):
    """A flat sequence applies to every level; a sequence of sequences gives one per level."""
    values = tuple(values)
    if all(isinstance(v, (int, float, np.number)) for v in values):
        return (tuple(float(v) for v in values),) * num_levels
    if len(values) != num_levels:
        raise ValueError(
            f"`{name}` has {len(values)} per-level entries but there are {num_levels} strides."
        )
    return tuple(tuple(float(v) for v in level) for level in values)


def _positive_strides(strides):
    """Strides as Python ints, each a whole number ``>= 1``."""
    values = tuple(strides)
    for s in values:
        if isinstance(s, bool) or not np.isfinite(float(s)) or s < 1 or float(s) != int(s):
            raise ValueError(f"`strides` must be positive integers, got {strides!r}.")
    return tuple(int(s) for s in values)


def _check_positive(levels, name, given):
    """Anchor sizes and aspect ratios must be finite and ``> 0``: a 0 size (or ratio) gives
    zero-area (or NaN / infinite) anchors, from which no proposal can ever be decoded."""
    for level in levels:
        for v in level:
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"`{name}` must be finite and > 0, got {given!r}.")


def _py_faster_rcnn_cell_anchors(stride, sizes, aspect_ratios):
    """py-faster-rcnn's ``generate_anchors`` with ``base_size = stride``, ``scales = sizes/stride``.

    Its arithmetic is reproduced step by step, rounding included: for each ratio the base box
    ``[0, 0, s-1, s-1]`` becomes ``ws = round(sqrt(s*s/ratio))``, ``hs = round(ws*ratio)``; each
    is then multiplied by every scale and re-centred at ``(s-1)/2`` as an inclusive-coordinate
    box. Adding 1 to ``x2, y2`` turns it into our continuous convention.
    """
    base = float(stride)
    center = 0.5 * (base - 1.0)
    anchors = []
    for ratio in aspect_ratios:
        ws = np.round(np.sqrt(base * base / ratio))
        hs = np.round(ws * ratio)
        for size in sizes:
            scale = size / base
            w, h = ws * scale, hs * scale
            anchors.append(
                [
                    center - 0.5 * (w - 1.0),
                    center - 0.5 * (h - 1.0),
                    center + 0.5 * (w - 1.0) + 1.0,
                    center + 0.5 * (h - 1.0) + 1.0,
                ]
            )
    return np.asarray(anchors, np.float32)


def _torchvision_cell_anchors(sizes, aspect_ratios):
    """torchvision ``AnchorGenerator.generate_anchors``: float32 math, half sizes rounded.

    Ratios outer, sizes inner; ``w = size / sqrt(ratio)``, ``h = size * sqrt(ratio)``, box
    ``round([-w/2, -h/2, w/2, h/2])`` (round half to even, like ``torch.round``).
    """
    sizes = np.asarray(sizes, np.float32)
    h_ratios = np.sqrt(np.asarray(aspect_ratios, np.float32))
    w_ratios = np.float32(1.0) / h_ratios
    ws = (w_ratios[:, None] * sizes[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * sizes[None, :]).reshape(-1)
    return np.round(np.stack([-ws, -hs, ws, hs], axis=1) / np.float32(2.0)).astype(np.float32)


def _detectron2_cell_anchors(sizes, aspect_ratios):
    """detectron2 ``DefaultAnchorGenerator``: sizes outer, ratios inner, no rounding.

    ``w = sqrt(size² / ratio)``, ``h = ratio * w``, box ``[-w/2, -h/2, w/2, h/2]``.
    """
    anchors = []
    for size in sizes:
        for ratio in aspect_ratios:
            w = math.sqrt(size * size / ratio)
            h = ratio * w
            anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return np.asarray(anchors, np.float32)


def concat_levels(anchors):
    """Join per-level anchors ``[H_l·W_l·A_l, 4]`` → ``[Σ H_l·W_l·A_l, 4]``, in level order."""
    if isinstance(anchors, (list, tuple)):
        return tf.concat(list(anchors), axis=0)
    return anchors


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class AnchorGenerator(keras.layers.Layer):
    """Anchors of every cell of one or several feature maps, in input-image pixels.

    Each level ``l`` has a stride ``strides[l]`` and ``A_l = len(sizes_l) * len(ratios_l)``
    cell anchors; the anchor of cell ``(x, y)`` is the cell anchor shifted by
    ``((x + offset)·stride, (y + offset)·stride)``. The anchors of a level are returned as
    ``[H·W·A, 4]`` in row-major order (``y``, then ``x``, then anchor index), which is the order
    of an RPN head output ``[B, H, W, A·4]`` reshaped to ``[B, H·W·A, 4]``.

    Three conventions for the cell anchors (they differ by a pixel or by the anchor order, which
    matters when loading weights trained with one of them):

    - ``"py-faster-rcnn"`` (Faster R-CNN VGG16 / ResNet-C4, R-FCN, Caffe Detectron): the
      reference ``generate_anchors`` with base size ``stride`` and scales ``size / stride``,
      including its rounding; anchors centred at ``stride / 2``. Order: ratios outer, sizes
      inner. With stride 16, sizes ``(128, 256, 512)`` and ratios ``(0.5, 1, 2)`` the first
      anchor is ``[-84, -40, 100, 56]``.
    - ``"torchvision"``: centred at 0, ``w = size/√ratio``, ``h = size·√ratio``, half sizes
      rounded; ratios outer, sizes inner.
    - ``"detectron2"``: centred at 0, not rounded; sizes outer, ratios inner (use
      ``offset=0.5`` for its ``ANCHOR_GENERATOR.OFFSET = 0.5`` configs).

    Args:
        sizes: anchor sizes in pixels (``√(w·h)`` before rounding). A flat tuple is used at
            every level; a tuple of tuples gives the sizes of each level (FPN:
            ``((32,), (64,), (128,), (256,), (512,))``).
        aspect_ratios: ``height / width`` ratios, flat (all levels) or per level.
        strides: one stride in pixels per level, e.g. ``(16,)`` or ``(4, 8, 16, 32, 64)``.
        convention: ``"py-faster-rcnn"``, ``"torchvision"`` or ``"detectron2"``.
        offset: cell offset in units of the stride added to every shift (default 0).
        stride_rule: how far apart the cells of a level are. ``"nominal"``: ``strides[l]``.
            ``"image_over_grid"``: ``image_size // grid_size`` per axis, torchvision's rule: with
            a batch padded to a multiple of 32 it equals the nominal stride on P2–P5, but P6
            (``ceil(P5 / 2)`` cells) gets 61–64 px (800 px → 13 cells → 61). Needs
            ``image_shape`` in ``call``. The cell anchors keep the nominal stride.

    Call arguments:
        inputs: one level's feature map ``[B, H, W, C]`` (or its shape as a rank-1 int tensor,
            ``[H, W]`` or ``[B, H, W, C]``), or a list with one of these per level. Sizes may be
            dynamic. Use :meth:`anchors_for_shapes` for Python integers.
        image_shape: ``(height, width)`` of the (padded) input batch in pixels; used by
            ``stride_rule="image_over_grid"`` and ignored otherwise.

    Returns:
        float32 anchors ``[H·W·A, 4]`` for a single input, or a list of them (one per level) for
        a list input. :func:`concat_levels` joins levels. An empty feature map (``H`` or ``W``
        0) has no anchors, ``[0, 4]``.

    Raises:
        ValueError: a size or aspect ratio that is not finite and ``> 0``, a stride that is not
            a positive integer, or a combination whose anchors overflow float32.
    """

    def __init__(
        self,
        sizes=(128, 256, 512),
        aspect_ratios=(0.5, 1.0, 2.0),
        strides=(16,),
        convention="py-faster-rcnn",
        offset=0.0,
        stride_rule="nominal",
        **kwargs,
    ):
        # Only shapes are read from the inputs: never cast feature maps for nothing.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if convention not in CONVENTIONS:
            raise ValueError(f"`convention` must be one of {CONVENTIONS}, got {convention!r}.")
        self.sizes = sizes
        self.aspect_ratios = aspect_ratios
        self.strides = strides
        self.convention = convention
        self.offset = offset
        if stride_rule not in STRIDE_RULES:
            raise ValueError(f"`stride_rule` must be one of {STRIDE_RULES}, got {stride_rule!r}.")
        self.stride_rule = stride_rule

        strides = _positive_strides(strides)
        level_sizes = _per_level(sizes, len(strides), "sizes")
        level_ratios = _per_level(aspect_ratios, len(strides), "aspect_ratios")
        _check_positive(level_sizes, "sizes", sizes)
        _check_positive(level_ratios, "aspect_ratios", aspect_ratios)
        if not np.isfinite(float(offset)):
            raise ValueError(f"`offset` must be finite, got {offset!r}.")
        self._cell_anchors = []
        for stride, lsizes, lratios in zip(strides, level_sizes, level_ratios):
            # An overflow is reported below, as an error rather than NumPy warnings.
            with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
                if convention == "py-faster-rcnn":
                    cell = _py_faster_rcnn_cell_anchors(stride, lsizes, lratios)
                elif convention == "torchvision":
                    cell = _torchvision_cell_anchors(lsizes, lratios)
                else:
                    cell = _detectron2_cell_anchors(lsizes, lratios)
            if not np.all(np.isfinite(cell)):
                raise ValueError(
                    f"`sizes` {lsizes} and `aspect_ratios` {lratios} give anchors that overflow "
                    f"float32 (stride {stride}); use a less extreme aspect ratio or size."
                )
            self._cell_anchors.append(cell)
        self._level_strides = strides

    @property
    def num_levels(self):
        return len(self._level_strides)

    @property
    def num_anchors_per_location(self):
        """List of ``A_l``, the number of anchors per feature-map cell of each level."""
        return [len(cell) for cell in self._cell_anchors]

    def cell_anchors(self, level=0):
        """The ``[A_l, 4]`` float32 NumPy cell anchors of a level (those of cell ``(0, 0)``)."""
        return self._cell_anchors[level].copy()

    def _cell_spacing(self, level, height, width, image_shape):
        """``(stride_y, stride_x)`` float32 of a level's cells (see ``stride_rule``)."""
        if self.stride_rule == "nominal" or image_shape is None:
            if self.stride_rule != "nominal":
                raise ValueError("stride_rule='image_over_grid' needs image_shape=(height, width)")
            stride = float(self._level_strides[level])
            return stride, stride
        image_shape = tf.cast(image_shape, tf.int32)
        # An empty grid has no cells to space (and must not divide by zero).
        stride_y = image_shape[0] // tf.maximum(tf.cast(height, tf.int32), 1)
        stride_x = image_shape[1] // tf.maximum(tf.cast(width, tf.int32), 1)
        check = tf.debugging.Assert(
            (stride_y >= 1) & (stride_x >= 1),
            ["AnchorGenerator(stride_rule='image_over_grid'): image_shape must be at least the "
             "feature-map size (image_size // grid_size >= 1); got image_shape =", image_shape,
             "and grid (height, width) =", tf.stack([tf.cast(height, tf.int32),
                                                     tf.cast(width, tf.int32)])],
        )
        with tf.control_dependencies([check]):
            return tf.cast(stride_y, tf.float32), tf.cast(stride_x, tf.float32)

    def _level_anchors(self, level, height, width, image_shape=None):
        stride_y, stride_x = self._cell_spacing(level, height, width, image_shape)
        cell = tf.constant(self._cell_anchors[level], tf.float32)
        shift_x = (tf.cast(tf.range(width), tf.float32) + self.offset) * stride_x
        shift_y = (tf.cast(tf.range(height), tf.float32) + self.offset) * stride_y
        shift_y, shift_x = tf.meshgrid(shift_y, shift_x, indexing="ij")  # [H, W] each
        shifts = tf.stack([shift_x, shift_y, shift_x, shift_y], axis=-1)  # [H, W, 4]
        anchors = shifts[:, :, None, :] + cell[None, None, :, :]  # [H, W, A, 4]
        num = None
        if isinstance(height, int) and isinstance(width, int):
            num = height * width * len(self._cell_anchors[level])
        return tf.reshape(anchors, [-1 if num is None else num, 4])

    def anchors_for_shapes(self, feature_shapes, image_shape=None):
        """Anchors for feature maps of the given ``(H, W)`` sizes (ints or scalar tensors).

        ``feature_shapes`` is one ``(H, W)`` pair or a list with one pair per level; the result
        is ``[H·W·A, 4]`` or a list of them, as for ``call``.
        """
        single = len(feature_shapes) == 2 and not isinstance(feature_shapes[0], (list, tuple))
        if single and self.num_levels == 1:
            return self._level_anchors(0, *feature_shapes, image_shape)
        if len(feature_shapes) != self.num_levels:
            raise ValueError(
                f"Got {len(feature_shapes)} feature shapes for {self.num_levels} levels."
            )
        return [
            self._level_anchors(i, h, w, image_shape) for i, (h, w) in enumerate(feature_shapes)
        ]

    @staticmethod
    def _height_width(x):
        x = tf.convert_to_tensor(x)
        if x.shape.rank == 1:  # a shape vector: [H, W] or [B, H, W, C]
            if x.shape[0] == 4:
                x = x[1:3]
            elif x.shape[0] != 2:
                raise ValueError(f"A feature shape must have 2 or 4 entries, got {x.shape}.")
            return x[0], x[1]
        if x.shape.rank != 4:
            raise ValueError(f"Expected a [B, H, W, C] feature map, got shape {x.shape}.")
        static, dynamic = x.shape, tf.shape(x)
        height = static[1] if static[1] is not None else dynamic[1]
        width = static[2] if static[2] is not None else dynamic[2]
        return height, width

    def call(self, inputs, image_shape=None):
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != self.num_levels:
                raise ValueError(f"Got {len(inputs)} inputs for {self.num_levels} levels.")
            return [
                self._level_anchors(i, *self._height_width(x), image_shape)
                for i, x in enumerate(inputs)
            ]
        if self.num_levels != 1:
            raise ValueError(f"Pass a list of {self.num_levels} feature maps, one per level.")
        return self._level_anchors(0, *self._height_width(inputs), image_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "sizes": self.sizes,
                "aspect_ratios": self.aspect_ratios,
                "strides": self.strides,
                "convention": self.convention,
                "offset": self.offset,
                "stride_rule": self.stride_rule,
            }
        )
        return config
