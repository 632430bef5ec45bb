"""fit under tf.distribute.MirroredStrategy with two logical CPU devices.

Logical devices must be configured before TensorFlow initialises, so the step runs in a fresh
Python process.
"""

import json
import subprocess
import sys
import textwrap

import numpy as np

SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    import keras
    import rcnn_zoo
    from rcnn_zoo.data.synthetic import shapes_dataset

    keras.utils.set_random_seed(0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = rcnn_zoo.FasterRCNN(num_classes=3, backbone="tiny")
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(shapes_dataset(8, batch_size=4, image_size=(96, 128), seed=0),
                        epochs=2, verbose=0)
    changed = any(not np.allclose(a, w.numpy()) for a, w in zip(before, model.trainable_weights))
    print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                      "history": {k: [float(x) for x in v] for k, v in history.history.items()},
                      "changed": changed}))
    """
)


def test_fit_under_mirrored_strategy_with_two_replicas():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["changed"]
    for name in ("loss", "rpn_cls", "rpn_box", "cls", "box"):
        values = report["history"][name]
        assert len(values) == 2 and all(np.isfinite(values)), (name, values)
    # The logged total is the per-batch loss (not divided by the replica count).
    total = report["history"]["loss"][0]
    parts = sum(report["history"][n][0] for n in ("rpn_cls", "rpn_box", "cls", "box"))
    assert abs(total - parts) <= 1e-3 * max(1.0, abs(total))

