"""Export needs only the detector protocol: any model of ``rcnn_zoo.models.protocol`` with a
class count and a box format (here a relative one), no class names, not yet built."""

import io

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

import rcnn_zoo
from rcnn_zoo.export import export_saved_model


class CentreBoxDetector(rcnn_zoo.models.protocol.MultiTaskDetector):
    """Finds the centre half of every image, class 1, with a learnt score (one weight).

    Boxes are ``rel_yxyx`` relative to each image's own size (the detector protocol); D = 2, one
    valid row. It reads its input as every rcnn_zoo detector does (``unpack_images``).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.bounding_box_format, self.max_detections = 2, "rel_yxyx", 2
        self.class_names = None

    def build(self, input_shape):
        self.score = self.add_weight(shape=(), initializer="zeros", name="score")

    def call(self, inputs, training=False):
        images, _ = rcnn_zoo.models.detector.unpack_images(inputs)
        batch = tf.shape(images)[0]
        rows = tf.constant([[0.25, 0.25, 0.75, 0.75], [0.0, 0.0, 0.0, 0.0]])
        return {
            "boxes": tf.tile(rows[None], [batch, 1, 1]),
            "scores": tf.tile(tf.stack([tf.convert_to_tensor(self.score), 0.0])[None], [batch, 1]),
            "labels": tf.tile(tf.constant([[1, -1]]), [batch, 1]),
            "num_detections": tf.fill([batch], 1),
        }


def _png(height, width):
    data = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(data, format="PNG")
    return data.getvalue()


def test_any_two_stage_detector_exports(tmp_path):
    model = CentreBoxDetector()
    assert not model.built
    model(tf.zeros([1, 8, 8, 3]))
    model.score.assign(0.875)
    path = export_saved_model(model, str(tmp_path / "centre"), input_type="encoded_image_string_tensor",
                              verbose=False)
    loaded = tf.saved_model.load(path)
    outputs = loaded.signatures["serving_default"](input_tensor=tf.constant([_png(100, 200), _png(50, 100)]))
    # Image 2 (50×100) is padded to 100×200 in the batch, but its boxes stay relative to its
    # own size: the centre half of each image.
    np.testing.assert_allclose(
        outputs["detection_boxes"].numpy(),
        [[[0.25, 0.25, 0.75, 0.75], [0, 0, 0, 0]], [[0.25, 0.25, 0.75, 0.75], [0, 0, 0, 0]]],
    )
    np.testing.assert_allclose(outputs["detection_scores"].numpy(), [[0.875, 0], [0.875, 0]])
    np.testing.assert_array_equal(outputs["detection_classes"].numpy(), [[2, 0], [2, 0]])
    np.testing.assert_array_equal(outputs["num_detections"].numpy(), [1, 1])
    with open(loaded.labels_file.asset_path.numpy().decode()) as handle:
        assert handle.read().splitlines() == ["class_0", "class_1"]


def test_unbuilt_detector_is_built_before_tracing(tmp_path):
    keras.utils.set_random_seed(0)
    path = export_saved_model(CentreBoxDetector(), str(tmp_path / "fresh"), verbose=False)
    outputs = tf.saved_model.load(path).signatures["serving_default"](
        input_tensor=tf.zeros([3, 40, 30, 3], tf.uint8)
    )
    np.testing.assert_allclose(outputs["detection_boxes"].numpy()[:, 0], [[0.25, 0.25, 0.75, 0.75]] * 3)
    np.testing.assert_array_equal(outputs["detection_scores"].numpy()[:, 0], [0.0] * 3)
