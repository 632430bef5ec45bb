"""R-CNN exports with a second serving input, the client's selective-search proposals, and
serves the detections ``predict`` gives on them (SVM margins, the default −1 threshold)."""

import numpy as np
import tensorflow as tf

import keras
import rcnn_zoo
from od_api_matching import assert_served_matches_predict
from rcnn_zoo.data.synthetic import generate_shapes


def test_rcnn_saved_model_takes_proposals_and_matches_predict(tmp_path):
    keras.utils.set_random_seed(3)
    model = rcnn_zoo.RCNN(num_classes=3, backbone="tiny", warp_size=32, context_padding=4,
                          max_detections=10, region_batch_size=7)
    rng = np.random.default_rng(0)
    for layer, std in ((model.svm, 0.1), (model.bbox_regressor, 0.002)):  # zero-initialised
        layer.kernel.assign(rng.normal(0, std, layer.kernel.shape).astype("float32"))
        layer.bias.assign(rng.normal(0, std, layer.bias.shape).astype("float32"))
    images, boxes, _ = generate_shapes(2, image_size=(96, 128), seed=6)
    corners = rng.uniform(0, 60, (2, 12, 2))
    proposals = np.concatenate([corners, corners + rng.uniform(10, 60, (2, 12, 2))], -1)
    proposals = np.concatenate([boxes, proposals], axis=1).astype("float32")  # zero rows: padding
    expected = model.predict({"images": images, "proposals": proposals}, verbose=0)
    assert (expected["num_detections"] > 0).all()
    path = str(tmp_path / "rcnn" / "1")
    model.export(path, verbose=False)

    signature = tf.saved_model.load(path).signatures["serving_default"]
    assert set(signature.structured_input_signature[1]) == {"input_tensor", "proposals"}
    served = signature(input_tensor=tf.constant(images), proposals=tf.constant(proposals))
    assert_served_matches_predict(served, expected, 96, 128)
