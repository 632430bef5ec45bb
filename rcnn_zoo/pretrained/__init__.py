"""Pretrained detector weights: by registered name (a preset), or from a weights file.

    model = rcnn_zoo.FasterRCNN(weights="coco")                  # the source model, exactly
    model = rcnn_zoo.FasterRCNN.from_preset("voc", score_threshold=0.5)   # the same, documented
    model = rcnn_zoo.FasterRCNN(weights="voc", num_classes=5)   # fine-tuning start
    model = rcnn_zoo.FasterRCNN(num_classes=3, backbone="tiny", weights="run/best.weights.h5")

The public name is :mod:`rcnn_zoo.weights`, which hands these names on. A registered name is a
*preset*: the entry's ``model`` arguments (class count, backbone and every hyperparameter of the
source's pre- and post-processing) and class names build the model, and the caller's arguments
override them (:mod:`~rcnn_zoo.pretrained.presets`). An override that changes the architecture
(backbone, layer widths, anchors per location) is refused naming the argument; a different
``num_classes`` loads everything but the class-specific predictor. Each entry names its detector
class (``"detector"``, default ``FasterRCNN``) and may be registered under another key with
``"preset"`` as its short name (``FastRCNN(weights="coco")`` is entry ``fast_rcnn_coco``).

Names live in ``weights/registry.json`` (data, not code; fields in ``weights/README.md``), read
by :mod:`~rcnn_zoo.pretrained.registry`; extra registries of the same format can be listed in
``$RCNN_ZOO_WEIGHTS_REGISTRY`` (``os.pathsep``-separated; their entries override by name). A
named entry is

1. checked against the model (:mod:`~rcnn_zoo.pretrained.compatibility`: same backbone and
   layer sizes; a warning lists behaviour settings that differ from the published metric's);
2. fetched into ``<cache>/rcnn_zoo/`` (:mod:`~rcnn_zoo.pretrained.download`) and its SHA-256
   verified (:mod:`~rcnn_zoo.pretrained.integrity`);
3. if it is a PyTorch checkpoint (``"convert"``), converted once with :mod:`rcnn_zoo.convert`
   and cached next to it (:mod:`~rcnn_zoo.pretrained.conversion`);
4. loaded like a file (:mod:`~rcnn_zoo.pretrained.loading`): ``model.load_weights``, or all
   but the predictor when the class count differs. A damaged file is refused with
   :class:`WeightsFileError` naming it.

This package sees a model only through ``hyperparameters()``, ``anchors_per_location``,
``backbone_name``, ``num_classes``, its class, ``load_weights`` and ``weights``, and never
imports :mod:`rcnn_zoo.models`; layer paths are known in :mod:`~rcnn_zoo.pretrained.layout` only.
"""

from rcnn_zoo.pretrained.contents import checkpoint_num_classes
from rcnn_zoo.pretrained.download import CACHE_DIR_ENV, CACHE_SUBDIR
from rcnn_zoo.pretrained.errors import (
    WeightsDownloadError,
    WeightsFileError,
    WeightsIntegrityError,
    WeightsMismatchError,
)
from rcnn_zoo.pretrained.fetch import weights_file
from rcnn_zoo.pretrained.integrity import check_weights_file, file_sha256
from rcnn_zoo.pretrained.loading import load_detector_weights, load_weights_file
from rcnn_zoo.pretrained.presets import preset_arguments
from rcnn_zoo.pretrained.register import register_local_file
from rcnn_zoo.pretrained.registry import (
    REGISTRY_ENV,
    REGISTRY_FORMAT,
    available_weights,
    builtin_registry_path,
    find_preset,
    get_weights_entry,
    load_registry,
)

__all__ = [
    "CACHE_DIR_ENV",
    "CACHE_SUBDIR",
    "REGISTRY_ENV",
    "REGISTRY_FORMAT",
    "WeightsDownloadError",
    "WeightsFileError",
    "WeightsIntegrityError",
    "WeightsMismatchError",
    "available_weights",
    "builtin_registry_path",
    "check_weights_file",
    "checkpoint_num_classes",
    "file_sha256",
    "find_preset",
    "get_weights_entry",
    "load_detector_weights",
    "load_registry",
    "load_weights_file",
    "preset_arguments",
    "register_local_file",
    "weights_file",
]
