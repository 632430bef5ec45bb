"""What a backbone hands to a detector.

A backbone is a functional ``keras.Model`` mapping normalised images ``[B, H, W, 3]`` to a dict
of feature maps (``{"C4": ...}`` for single-level backbones, ``{"P2": ..., "P6": ...}`` for FPN),
plus the facts the detector needs to wire itself: which maps carry the RPN and RoI pooling, their
strides in input pixels, their channels, how images are normalised, and for ResNet-C4 the conv5
stage that runs on pooled RoI features (He et al. 2016, "Deep Residual Learning", appendix A).
"""

import dataclasses
from typing import Optional

import keras


@dataclasses.dataclass
class Backbone:
    """A feature extractor and the defaults that suit it.

    Attributes:
        model: functional model, images → dict of feature maps named in ``feature_names``.
        feature_names: names of the maps used for proposals and RoI pooling, finest first.
        rpn_feature_names: the subset the RPN reads (R-FCN: conv4 only), default all.
        strides: stride of each map in input pixels.
        channels: channels of each map.
        preprocessing: how raw 0..255 RGB pixels are normalised (see ``preprocessing.py``).
        roi_head: ``"fc"`` (flatten → two FC layers) or ``"res5"`` (conv5 stage on RoIs).
        res5: for ``roi_head="res5"``, the conv5 stage as a model ``[K, 14, 14, C4] → [K, 7, 7, C5]``.
        defaults: detector keyword defaults suited to this backbone (anchor sizes, RoI op, …).
    """

    model: keras.Model
    feature_names: tuple
    strides: tuple
    channels: tuple
    preprocessing: str
    roi_head: str = "fc"
    res5: Optional[keras.Model] = None
    defaults: dict = dataclasses.field(default_factory=dict)
    rpn_feature_names: Optional[tuple] = None  # maps the RPN reads; None = all feature_names

    def rpn_levels(self):
        """``(names, strides, channels)`` of the maps the RPN reads."""
        names = self.rpn_feature_names or self.feature_names
        index = [self.feature_names.index(n) for n in names]
        return tuple(names), tuple(self.strides[i] for i in index), tuple(self.channels[i] for i in index)


def check_weights_argument(name, weights):
    """``backbone_weights`` is ``None`` or ``"imagenet"``; anything else is refused clearly."""
    if weights not in (None, "imagenet"):
        raise ValueError(
            f"backbone_weights for {name!r} must be None or 'imagenet', got {weights!r}. "
            "To load a whole detector from a file pass weights=... to the detector instead."
        )


def load_imagenet(name, factory):
    """Build a keras.applications model with ImageNet weights, explaining offline failures.

    ``factory`` is a no-argument callable that downloads through ``keras.utils.get_file``.
    """
    try:
        return factory()
    except Exception as error:  # URLError, HTTPError, hash mismatch, ...
        raise RuntimeError(
            f"Could not download ImageNet weights for backbone {name!r} through keras.applications "
            f"({type(error).__name__}: {error}). Without network access use backbone_weights=None "
            "(training from scratch), or place the file in ~/.keras/models/ by hand."
        ) from error
