"""R-FCN exports like Faster R-CNN: the served detections equal model.predict."""

import tensorflow as tf

import keras
import rcnn_zoo
from od_api_matching import assert_served_matches_predict
from rcnn_zoo.data.synthetic import generate_shapes


def test_rfcn_saved_model_matches_predict(tmp_path):
    keras.utils.set_random_seed(5)
    model = rcnn_zoo.RFCN(num_classes=3, backbone="tiny", k=3, score_threshold=0.0, max_detections=10)
    images, _, _ = generate_shapes(2, image_size=(96, 128), seed=4)
    expected = model.predict(images, verbose=0)
    path = str(tmp_path / "rfcn" / "1")
    rcnn_zoo.export_saved_model(model, path, input_type="image_tensor", verbose=False)

    served = tf.saved_model.load(path).signatures["serving_default"](input_tensor=tf.constant(images))
    assert_served_matches_predict(served, expected, 96, 128)
