"""Fast R-CNN exports with a second serving input, the client's proposals."""

import numpy as np
import tensorflow as tf

import keras
import rcnn_zoo
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
    count = expected["num_detections"]
    np.testing.assert_array_equal(served["num_detections"].numpy(), count.astype("float32"))
    for i in range(2):
        n = count[i]
        x1, y1, x2, y2 = expected["boxes"][i][:n].T
        normalised = np.stack([y1 / 96, x1 / 128, y2 / 96, x2 / 128], axis=1)
        got_boxes = served["detection_boxes"][i][:n].numpy()
        got_scores = served["detection_scores"][i][:n].numpy()
        got_classes = served["detection_classes"][i][:n].numpy()
        for box, score, label in zip(normalised, expected["scores"][i][:n], expected["labels"][i][:n]):
            same = (
                (got_classes == label + 1)
                & np.all(np.abs(got_boxes - box) < 1e-4, axis=1)
                & (np.abs(got_scores - score) < 1e-5)
            )
            assert same.any(), (box, score, label)
