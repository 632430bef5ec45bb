"""Proof that R-CNN learns: the paper's three training stages with the tiny backbone, from
scratch on generated shapes, then selective search + detection on fresh images (another seed).

Budget (about 2–3 minutes on 2 shared CPU cores): 150 training images of 96×128 with selective
search proposals (fast mode, about 150 per image — the same proposals as at test time, which
matters: with jittered ground truth + random boxes the background regions selective search
proposes at test time were never seen and the mAP fell to about 0.77); regions warped to 64×64
with p = 8 (the objects are 16–64 px and the tiny net sees 55 px, so a quarter of the warped
width is context, twice the paper's 16/227); 300 fine-tuning batches of 32 fg + 96 bg regions;
2 rounds of hard negative mining; ridge box regressors; 40 test images.

Measured while writing it, on 2 cores shared with other jobs (load ≈ 6, the process got about
70 s of CPU): 108–132 s wall; mAP@0.5 0.911 / 0.892 / 0.861 with model seeds 0 / 1 / 2 (the
triangle class is the weak one, 0.68–0.78). Variants tried on the way: softmax scores instead of
the SVMs 0.90; warp 48 with 300 batches 0.83, with 200 batches 0.74; jittered ground truth +
random boxes as training proposals 0.77. A model that does not learn gets ~0 and one that
separates objects from background but guesses the class about 1/3, so ``≥ 0.8`` asks for a
working region classifier on the real proposal method, with margin for seed and machine noise.
"""

import numpy as np

import keras
from rcnn_zoo.data.synthetic import CLASS_NAMES, generate_shapes
from rcnn_zoo.evaluation.voc import voc_ap_per_class
from rcnn_zoo.models.rcnn import RCNN

IMAGE_SIZE = (96, 128)
TRAIN_IMAGES = 150
FINE_TUNE_BATCHES = 300
TEST_IMAGES = 40


def _detections(out, i):
    n = out["num_detections"][i]
    return out["boxes"][i][:n], out["scores"][i][:n], out["labels"][i][:n]


def test_tiny_rcnn_reaches_map_0_8_on_fresh_shapes():
    keras.utils.set_random_seed(0)
    model = RCNN(num_classes=3, backbone="tiny", warp_size=64, context_padding=8,
                 class_names=list(CLASS_NAMES))
    images, boxes, labels = generate_shapes(TRAIN_IMAGES, image_size=IMAGE_SIZE, seed=0)
    regions = model.prepare_regions(images, boxes, labels)  # selective search, fast mode

    schedule = keras.optimizers.schedules.CosineDecay(2e-3, FINE_TUNE_BATCHES, alpha=0.05)
    history = model.fine_tune(
        model.fine_tune_dataset(regions, num_batches=FINE_TUNE_BATCHES, batch_size=128),
        epochs=1, optimizer=keras.optimizers.Adam(schedule), verbose=0,
    )
    assert history.history["accuracy"][-1] > 0.8
    model.train_svms(regions, rounds=2, epochs_per_round=5)
    model.train_box_regressors(regions)

    test_images, test_boxes, test_labels = generate_shapes(TEST_IMAGES, image_size=IMAGE_SIZE, seed=12345)
    out = model.predict(test_images, verbose=0)
    detections = [_detections(out, i) for i in range(TEST_IMAGES)]
    truths = [(test_boxes[i][test_labels[i] >= 0], test_labels[i][test_labels[i] >= 0])
              for i in range(TEST_IMAGES)]
    ap, mean_ap = voc_ap_per_class(detections, truths, num_classes=3)
    print(f"R-CNN tiny: mAP@0.5 {mean_ap:.3f}, per class {np.round(ap, 3)}")
    assert mean_ap >= 0.8, f"mAP@0.5 {mean_ap:.3f}, per class {np.round(ap, 3)}"
