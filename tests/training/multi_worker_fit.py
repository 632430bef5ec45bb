"""One process of the ``model.fit`` test of ``test_multi_worker.py``.

    python multi_worker_fit.py worker OUT   # one worker of a MultiWorkerMirroredStrategy (TF_CONFIG)
    python multi_worker_fit.py single OUT   # the references, in one process

All train the same tiny Faster R-CNN (64×64 images, 3 classes) for ``STEPS`` steps of plain
SGD on the same global batches of 2 images (a replica gets 1 of each) and save its weights in
``OUT/weights-<name>.npz``. A worker: ``worker0``, ``worker1``. ``single``: first the
reference, one process without any strategy (``weights-single``, and ``initial-single``
before training); then, with the gradients clipped (``global_clipnorm`` small enough to act),
the same steps under a ``MirroredStrategy`` of two logical CPUs of this process
(``weights-mirrored``) and without a strategy (``weights-clipped-single``).

Sampling is made exhaustive so that the loss does not depend on random draws: every anchor
is sampled (``rpn_batch_size_per_image`` > the 576 anchors, positive fraction 1), the RPN keeps
16 proposals (non-maximum suppression leaves more than that on every image) and every one of
them is sampled with the ground truth (``roi_batch_size_per_image`` 64 > 16 + 2). The two images
of a batch are a synthetic picture and its colour negative: the same boxes, other pixels. So
both images of a batch have the same number of sampled anchors and RoIs: the per-replica
losses, each normalised over its own samples, average to the global batch's loss.

A worker also trains with :class:`rcnn_zoo.training.distribute.MultiWorkerBackupAndRestore`
(``OUT/backup``, kept), then builds a second model and fits it with that backup again: it must
restore the trained weights and run no epoch. ``OUT/report-<role>.json`` tells where the
worker wrote its backup, whether that folder still exists, and how many epochs the restored
fit ran.
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf

ROLE, OUT = sys.argv[1], sys.argv[2]
STRATEGY = None
# Created first: it configures the collective ops (or the devices) before TensorFlow runs anything.
if ROLE == "worker":
    STRATEGY = tf.distribute.MultiWorkerMirroredStrategy()
else:  # two logical CPUs for the MirroredStrategy (the reference itself runs on the first)
    CPU = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(CPU, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

import rcnn_zoo  # noqa: E402
from rcnn_zoo.data.synthetic import generate_shapes  # noqa: E402
from rcnn_zoo.training.distribute import MultiWorkerBackupAndRestore, strategy_scope  # noqa: E402

STEPS, GLOBAL_BATCH, SIZE = 3, 2, 64
CLIP = 0.5  # global gradient norm; the steps' norms are larger, so the clip acts
EXHAUSTIVE_SAMPLING = dict(rpn_batch_size_per_image=4096, rpn_positive_fraction=1.0, rpn_post_nms_top_n_train=16,
                           roi_batch_size_per_image=64, roi_positive_fraction=1.0)


def batches():
    """``STEPS`` global batches: a picture with two shapes and its colour negative."""
    images, boxes, labels = generate_shapes(STEPS, image_size=(SIZE, SIZE), min_shapes=2, max_shapes=2,
                                            min_size=16, max_size=28, seed=5)
    pairs = np.stack([images, 255 - images], axis=1).reshape(-1, SIZE, SIZE, 3).astype("float32")
    targets = {"boxes": np.repeat(boxes, 2, axis=0), "labels": np.repeat(labels, 2, axis=0)}
    return tf.data.Dataset.from_tensor_slices((pairs, targets)).batch(GLOBAL_BATCH)


def compiled_detector(seed, strategy=None, clip=None):
    """A tiny Faster R-CNN with exhaustive sampling and plain SGD (gradients clipped to a global
    norm ``clip``, or not), in the scope of ``strategy``."""
    keras.utils.set_random_seed(seed)
    with strategy_scope(strategy):
        model = rcnn_zoo.FasterRCNN(num_classes=3, backbone="tiny", **EXHAUSTIVE_SAMPLING)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01, global_clipnorm=clip))
    return model


def save(name, model):
    np.savez(os.path.join(OUT, f"{name}.npz"), **{v.path: keras.ops.convert_to_numpy(v.value) for v in model.weights})


def clipped():
    """The same steps with clipped gradients on two replicas of one process and on none."""
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for name, strategy in (("mirrored", mirrored), ("clipped-single", None)):
        model = compiled_detector(seed=0, strategy=strategy, clip=CLIP)
        model.fit(batches(), epochs=1, verbose=0)
        save(f"weights-{name}", model)


def main():
    model = compiled_detector(seed=0, strategy=STRATEGY)
    if ROLE == "single":
        save("initial-single", model)
        model.fit(batches(), epochs=1, verbose=0)
        save("weights-single", model)
        return clipped()
    task = STRATEGY.cluster_resolver.task_id
    backup = MultiWorkerBackupAndRestore(os.path.join(OUT, "backup"), delete_checkpoint=False)
    model.fit(batches(), epochs=1, verbose=0, callbacks=[backup])
    save(f"weights-worker{task}", model)

    again = compiled_detector(seed=1, strategy=STRATEGY)  # other initial weights: restoring must replace them
    restore = MultiWorkerBackupAndRestore(os.path.join(OUT, "backup"), delete_checkpoint=False)
    history = again.fit(batches(), epochs=1, verbose=0, callbacks=[restore])
    save(f"restored-worker{task}", again)
    report = {"write_dir": backup.backup_dir, "write_dir_exists": os.path.isdir(backup.backup_dir),
              "restored_epochs_run": len(history.epoch)}
    with open(os.path.join(OUT, f"report-worker{task}.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle)


if __name__ == "__main__":
    main()
