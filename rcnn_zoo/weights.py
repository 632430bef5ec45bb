"""``rcnn_zoo.weights``: the stable public name of rcnn_zoo's pretrained weights.

    model = rcnn_zoo.FasterRCNN(weights="coco")                      # a registered preset
    rcnn_zoo.weights.load_detector_weights(model, "run/best.weights.h5", strict=True)
    rcnn_zoo.weights.available_weights("FasterRCNN")

Scripts, the models and messages name this module; the code lives in :mod:`rcnn_zoo.pretrained`
(registry, download, integrity, conversion cache, loading), whose public names it hands on
unchanged, so that the package can be rearranged without breaking them.
"""

from rcnn_zoo.pretrained import *  # noqa: F403 (this module is the face of the package)
from rcnn_zoo.pretrained import __all__  # noqa: F401
