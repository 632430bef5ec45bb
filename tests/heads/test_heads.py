"""RPN head output order matches the anchor order; box head and predictor shapes."""

import numpy as np
import tensorflow as tf

from rcnn_zoo.heads import BoxPredictor, FCBoxHead, RPNHead
from rcnn_zoo.layers import AnchorGenerator


def test_rpn_outputs_are_flattened_in_anchor_order():
    """Entry (y·W + x)·A + a of the flat outputs is anchor a of cell (y, x)."""
    head = RPNHead(num_anchors=3, channels=8)
    features = tf.random.normal((2, 4, 5, 6), seed=0)
    logits, deltas, level_logits, _ = head([features])
    hidden = head.conv(features)
    grid_logits = head.objectness(hidden).numpy()  # [B, H, W, A]
    grid_deltas = head.deltas(hidden).numpy()  # [B, H, W, A*4]
    y, x, a = 2, 3, 1
    index = (y * 5 + x) * 3 + a
    np.testing.assert_allclose(logits[1, index], grid_logits[1, y, x, a], atol=1e-6)
    np.testing.assert_allclose(deltas[1, index], grid_deltas[1, y, x, 4 * a: 4 * a + 4], atol=1e-6)
    anchors = AnchorGenerator(sizes=(32, 64, 128), aspect_ratios=(1.0,), strides=(16,),
                              convention="torchvision")(features)
    assert anchors.shape[0] == logits.shape[1] == 4 * 5 * 3
    # the anchor at that index is centred on cell (y, x) with the a-th size
    centre = (anchors[index, :2] + anchors[index, 2:]) / 2
    np.testing.assert_allclose(centre, [x * 16, y * 16], atol=1e-5)
    assert level_logits[0].shape == (2, 60)


def test_box_head_and_predictor_shapes():
    head = FCBoxHead(dim=16)
    head.build((None, 7, 7, 4))
    predictor = BoxPredictor(num_classes=5)
    predictor.build((None, 16))
    logits, deltas = predictor(head(tf.zeros((3, 7, 7, 4))))
    assert logits.shape == (3, 6) and deltas.shape == (3, 6, 4)
    assert head.fc6.kernel.shape == (7 * 7 * 4, 16)
