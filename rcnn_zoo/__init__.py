"""rcnn_zoo: two-stage object detectors for Keras 3 (TensorFlow backend).

R-CNN, Fast R-CNN, Faster R-CNN and R-FCN built from Keras layers backed by compiled RoI ops
(``rcnn_zoo.ops``) with pure-TensorFlow fallbacks.

    model = rcnn_zoo.FasterRCNN(num_classes=20, backbone="resnet50_fpn")
    model.compile()
    model.fit(train_ds, epochs=12)
"""

import os

# Quiet TensorFlow's C++ logs (oneDNN, CUDA, CPU features); users can override.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from rcnn_zoo._quiet import import_tensorflow  # noqa: E402

import_tensorflow()  # its start-up messages come before TF_CPP_MIN_LOG_LEVEL applies

__version__ = "0.1.0"

from rcnn_zoo import layers, ops  # noqa: E402
from rcnn_zoo.export import export_saved_model  # noqa: E402
from rcnn_zoo.models import RCNN, RFCN, FasterRCNN, FastRCNN, TwoStageDetector  # noqa: E402

__all__ = ["RCNN", "FastRCNN", "FasterRCNN", "RFCN", "TwoStageDetector", "export_saved_model", "layers", "ops", "__version__"]
