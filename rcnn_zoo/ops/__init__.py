"""Stateless tensor functions: RoI ops (compiled or pure-TF) and box coding.

Each RoI op validates its inputs, then calls the compiled kernel from ``custom_ops/`` when it is
loaded, else its pure-TensorFlow fallback, which gives the same numbers and gradients.
``implementation()`` tells which one is active; ``force_fallback()`` forces the pure one (export).
"""

from rcnn_zoo.ops._loader import fallback_reason, force_fallback, implementation
from rcnn_zoo.ops.ps_roi_pool import ps_roi_pool
from rcnn_zoo.ops.roi_align import roi_align
from rcnn_zoo.ops.roi_pool import roi_pool
from rcnn_zoo.ops.warp import warp_regions

__all__ = [
    "roi_pool",
    "roi_align",
    "ps_roi_pool",
    "implementation",
    "fallback_reason",
    "force_fallback",
    "warp_regions",
]
