"""Anchor counts of registry arguments, computed without building an anchor generator, agree
with :class:`rcnn_zoo.layers.AnchorGenerator`."""

import pytest

from rcnn_zoo.layers import AnchorGenerator
from rcnn_zoo.pretrained.compatibility import anchors_per_location


@pytest.mark.parametrize("convention", ("py-faster-rcnn", "torchvision", "detectron2"))
@pytest.mark.parametrize("sizes, ratios, strides", [
    ((128, 256, 512), (0.5, 1.0, 2.0), (16,)),
    ((32,), (0.5, 1.0, 2.0), (16,)),
    (((32,), (64,), (128,), (256,), (512,)), (0.5, 1.0, 2.0), (4, 8, 16, 32, 64)),
    (((32, 40), (64, 80)), ((0.5, 1.0), (1.0, 2.0)), (8, 16)),
    ((16, 32, 64, 128, 256), (0.5, 1.0, 2.0), (4, 8)),
])
def test_anchor_count_is_the_generators(sizes, ratios, strides, convention):
    generator = AnchorGenerator(sizes=sizes, aspect_ratios=ratios, strides=strides, convention=convention)
    assert [anchors_per_location(sizes, ratios)] * len(strides) == generator.num_anchors_per_location


def test_levels_that_disagree_are_listed():
    assert anchors_per_location(((32,), (64, 128)), (0.5, 1.0)) == [2, 4]
