"""The 4-step alternating training helper trains exactly the parts each step names."""

import numpy as np
import tensorflow as tf

import keras
import rcnn_zoo
from rcnn_zoo.data.synthetic import generate_shapes
from rcnn_zoo.training import alternating_training

PARTS = ("backbone", "rpn.head", "roi_heads.box_head", "roi_heads.box_predictor")


def _part(model, dotted):
    for name in dotted.split("."):
        model = getattr(model, name)
    return model


class _Snapshot(keras.callbacks.Callback):
    """Records, per fit call, which parts' weights changed."""

    def __init__(self):
        super().__init__()
        self.changed = []

    def on_train_begin(self, logs=None):
        self._before = {p: [w.numpy().copy() for w in _part(self.model, p).trainable_weights
                            + _part(self.model, p).non_trainable_weights] for p in PARTS}

    def on_train_end(self, logs=None):
        changed = set()
        for part in PARTS:
            layer = _part(self.model, part)
            now = [w.numpy() for w in layer.trainable_weights + layer.non_trainable_weights]
            if any(not np.allclose(a, b) for a, b in zip(self._before[part], now)):
                changed.add(part)
        self.changed.append(changed)


def test_each_step_trains_only_its_parts_and_restores_trainable_flags():
    keras.utils.set_random_seed(0)
    model = rcnn_zoo.FasterRCNN(num_classes=3, backbone="tiny")
    images, boxes, labels = generate_shapes(2, image_size=(96, 128), seed=0)
    ds = tf.data.Dataset.from_tensors(
        (images.astype("float32"), {"boxes": boxes, "labels": labels})
    ).repeat(2)
    snapshot = _Snapshot()
    histories = alternating_training(
        model, ds, epochs=(1, 1, 1, 1), optimizer=lambda: keras.optimizers.Adam(1e-3),
        verbose=0, callbacks=[snapshot],
    )
    assert len(histories) == 4
    assert snapshot.changed == [
        {"backbone", "rpn.head"},
        {"backbone", "roi_heads.box_head", "roi_heads.box_predictor"},
        {"rpn.head"},
        {"roi_heads.box_head", "roi_heads.box_predictor"},
    ]
    # Step 1 counts only the RPN losses in the total, step 2 only the detection losses.
    h1, h2 = histories[0].history, histories[1].history
    np.testing.assert_allclose(h1["loss"][0], h1["rpn_cls"][0] + h1["rpn_box"][0], rtol=1e-4)
    np.testing.assert_allclose(h2["loss"][0], h2["cls"][0] + h2["box"][0], rtol=1e-4)
    assert all(_part(model, p).trainable for p in PARTS)
