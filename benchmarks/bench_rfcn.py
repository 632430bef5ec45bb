"""R-FCN vs Faster R-CNN with ResNet-101 at 300 RoIs: test time per image on the CPU.

    python benchmarks/bench_rfcn.py [--image PATH] [--repeats 3] [--threads 2]

The R-FCN paper (Dai et al. 2016, table 3) reports 0.42 s (Faster R-CNN, ResNet-101, conv5 run
per RoI) vs 0.17 s (R-FCN) per image on a K40 GPU at 300 RoIs: 2.5×. Both models here use the
same ResNet-101 trunk, the same 600 px image and 300 proposals; random weights (speed does not
depend on them). Prints a table and writes benchmarks/results/rfcn.json.
"""

import argparse
import json
import os
import statistics
import time

import numpy as np
from PIL import Image

DEFAULT_IMAGE = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "datasets", "raccoon", "images", "raccoon-1.jpg"
)


def time_model(model, image, repeats):
    """Median seconds of ``model(image)`` in inference mode (traced once first)."""
    import tensorflow as tf  # noqa: PLC0415

    batch = tf.constant(image[None].astype("float32"))
    infer = tf.function(lambda x: model(x, training=False))
    infer(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = infer(batch)
        np.asarray(out["boxes"])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare_rfcn_faster_rcnn(image, repeats=3, num_rois=300, min_size=600, max_size=1000):
    """``{"faster_rcnn_r101_s", "rfcn_r101_s", "ratio"}`` on one image."""
    import keras  # noqa: PLC0415
    import rcnn_zoo  # noqa: PLC0415

    common = dict(num_classes=20, backbone="resnet101", image_min_size=min_size,
                  image_max_size=max_size, rpn_post_nms_top_n_test=num_rois)
    keras.utils.set_random_seed(0)
    faster = rcnn_zoo.FasterRCNN(**common)
    faster_s = time_model(faster, image, repeats)
    del faster
    keras.utils.set_random_seed(0)
    rfcn = rcnn_zoo.RFCN(**common)
    rfcn_s = time_model(rfcn, image, repeats)
    return {
        "faster_rcnn_r101_s": round(faster_s, 3),
        "rfcn_r101_s": round(rfcn_s, 3),
        "ratio": round(faster_s / rfcn_s, 2),
        "rois": num_rois,
        "paper": {"faster_rcnn_r101_s": 0.42, "rfcn_r101_s": 0.17, "ratio": 2.5},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results", "rfcn.json"))
    args = parser.parse_args()
    import tensorflow as tf  # noqa: PLC0415

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    image = np.asarray(Image.open(args.image).convert("RGB"))
    result = compare_rfcn_faster_rcnn(image, args.repeats)
    print(f"{'model (ResNet-101, 300 RoIs)':<32}{'ours s':>10}{'paper s':>10}")
    print(f"{'Faster R-CNN (conv5 per RoI)':<32}{result['faster_rcnn_r101_s']:>10}{0.42:>10}")
    print(f"{'R-FCN':<32}{result['rfcn_r101_s']:>10}{0.17:>10}")
    print(f"{'speed-up':<32}{result['ratio']:>10}{2.5:>10}")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(dict(result, threads=args.threads, image=os.path.basename(args.image)), handle, indent=2)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
