"""R-FCN exports like Faster R-CNN: the served detections equal model.predict."""

import numpy as np
import tensorflow as tf

import keras
import rcnn_zoo
from rcnn_zoo.data.synthetic import generate_shapes


def test_rfcn_saved_model_matches_predict(tmp_path):
    keras.utils.set_random_seed(5)
    model = rcnn_zoo.RFCN(num_classes=3, backbone="tiny", k=3, score_threshold=0.0, max_detections=10)
    images, _, _ = generate_shapes(2, image_size=(96, 128), seed=4)
    expected = model.predict(images, verbose=0)
    path = str(tmp_path / "rfcn" / "1")
    rcnn_zoo.export_saved_model(model, path, input_type="image_tensor", verbose=False)

    served = tf.saved_model.load(path).signatures["serving_default"](input_tensor=tf.constant(images))
    count = expected["num_detections"]
    np.testing.assert_array_equal(served["num_detections"].numpy(), count.astype("float32"))
    for i in range(2):
        n = count[i]
        x1, y1, x2, y2 = expected["boxes"][i][:n].T
        normalised = np.stack([y1 / 96, x1 / 128, y2 / 96, x2 / 128], axis=1)
        got_boxes = served["detection_boxes"][i][:n].numpy()
        got_scores = served["detection_scores"][i][:n].numpy()
        got_classes = served["detection_classes"][i][:n].numpy()
        # Row order may differ where scores tie to float precision (compiled vs exported stock
        # ops), so match each expected detection to a served one by class, box and score.
        for box, score, label in zip(normalised, expected["scores"][i][:n], expected["labels"][i][:n]):
            same = (
                (got_classes == label + 1)
                & np.all(np.abs(got_boxes - box) < 1e-4, axis=1)
                & (np.abs(got_scores - score) < 1e-5)
            )
            assert same.any(), (box, score, label)
