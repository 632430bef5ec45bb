"""Fast R-CNN exports with a second serving input, the client's proposals."""

import numpy as np
import tensorflow as tf

import keras
import rcnn_zoo
from od_api_matching import assert_served_matches_predict
from rcnn_zoo.data.synthetic import generate_shapes


def test_fast_rcnn_saved_model_takes_proposals_and_matches_predict(tmp_path):
    keras.utils.set_random_seed(2)
    model = rcnn_zoo.FastRCNN(num_classes=3, backbone="tiny", score_threshold=0.0, max_detections=10)
    images, boxes, _ = generate_shapes(2, image_size=(96, 128), seed=6)
    proposals = np.concatenate([boxes, boxes + 3.0], axis=1).astype("float32")
    expected = model.predict({"images": images, "proposals": proposals}, verbose=0)
    path = str(tmp_path / "fast_rcnn" / "1")
    rcnn_zoo.export_saved_model(model, path, input_type="image_tensor", verbose=False)

    signature = tf.saved_model.load(path).signatures["serving_default"]
    assert set(signature.structured_input_signature[1]) == {"input_tensor", "proposals"}
    served = signature(input_tensor=tf.constant(images), proposals=tf.constant(proposals))
    assert_served_matches_predict(served, expected, 96, 128)
