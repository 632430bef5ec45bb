"""The papers' speed claims, reproduced as ratios in one run on the same backbone, image and
proposals (CPU, 2 threads):

1. R-CNN vs Fast R-CNN test time per image, VGG16, 2000 proposals (Fast R-CNN paper, table 4:
   146× without truncated SVD, 213× with it).
2. Selective search vs RPN proposal time per image (Faster R-CNN paper: ~2 s vs ~10 ms on a GPU,
   table 5; the RPN time excludes the shared conv layers).
3. Faster R-CNN ResNet-101 (conv5 per RoI) vs R-FCN ResNet-101 at 300 RoIs (R-FCN paper,
   table 3: 0.42 s vs 0.17 s, 2.5×).

    python benchmarks/bench_speed_claims.py [--image PATH] [--repeats 3]

Prints a table and writes benchmarks/results/speed_claims.json. Random weights (speed does not
depend on them). R-CNN's CNN time is measured on a few regions and multiplied by 2000 (each
region is an independent forward pass); the table says so.
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_fast_rcnn import bench_fast_rcnn, bench_selective_search  # noqa: E402
from bench_rcnn import rcnn_test_time  # noqa: E402
from bench_rfcn import compare_rfcn_faster_rcnn  # noqa: E402

DEFAULT_IMAGE = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "datasets", "raccoon", "images", "raccoon-1.jpg"
)


def rpn_proposal_time(image, repeats=3, min_size=600, max_size=1000):
    """Seconds of the RPN part of Faster R-CNN VGG16 (head, anchors, decoding, NMS) on the
    conv5_3 features of one image — the shared conv layers are excluded, as in the paper."""
    import tensorflow as tf  # noqa: PLC0415

    import keras  # noqa: PLC0415
    import rcnn_zoo  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    model = rcnn_zoo.FasterRCNN(num_classes=20, backbone="vgg16", image_min_size=min_size,
                                image_max_size=max_size)
    normalized, _ = model.preprocess(tf.constant(image[None].astype("float32")))
    features = model.backbone(normalized)[model.rpn_feature_names[0]]
    height, width = normalized.shape[1], normalized.shape[2]

    @tf.function
    def propose(feature):
        anchors = model.rpn.anchor_generator(feature)
        logits, deltas, _, _ = model.rpn.head([feature])
        return model.rpn.proposal_layer(logits, deltas, anchors,
                                    image_shape=tf.constant([height, width], tf.float32))

    propose(features)
    times = []
    for _ in range(max(repeats, 5)):
        start = time.perf_counter()
        np.asarray(propose(features)["boxes"])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results", "speed_claims.json"))
    args = parser.parse_args()
    import tensorflow as tf  # noqa: PLC0415

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    image = np.asarray(Image.open(args.image).convert("RGB"))

    rcnn = rcnn_test_time(image, backbone="vgg16", num_proposals=2000, repeats=args.repeats)
    fast = bench_fast_rcnn(image, num_proposals=2000, repeats=args.repeats)
    fast_plain = next(r for r in fast if r["fc6_rank"] is None)
    fast_svd = next(r for r in fast if r["fc6_rank"] is not None)
    search = bench_selective_search(image, modes=("fast",), max_sides=(None,), repeats=args.repeats)[0]
    rpn_s = rpn_proposal_time(image, args.repeats)
    rfcn = compare_rfcn_faster_rcnn(image, args.repeats)

    # R-CNN's test time includes its selective search; Fast R-CNN's the proposals are given, as
    # in the paper's table 4 (which excludes proposal time for both).
    rcnn_cnn_s = rcnn["cnn_s_extrapolated"] + rcnn["nms_s"]
    rows = [
        ("R-CNN / Fast R-CNN, VGG16, no SVD", rcnn_cnn_s, fast_plain["inference_s"], 146.0),
        ("R-CNN / Fast R-CNN, VGG16, SVD", rcnn_cnn_s, fast_svd["inference_s"], 213.0),
        ("selective search / RPN proposals", search["seconds"], rpn_s, 2.0 / 0.010),
        ("Faster R-CNN R101 / R-FCN R101, 300 RoIs", rfcn["faster_rcnn_r101_s"], rfcn["rfcn_r101_s"], 2.5),
    ]
    print(f"{'claim':<44}{'slow s':>10}{'fast s':>10}{'ratio':>9}{'paper':>9}")
    results = []
    for name, slow, quick, paper in rows:
        ratio = slow / quick
        print(f"{name:<44}{slow:>10.3f}{quick:>10.3f}{ratio:>9.1f}{paper:>9.1f}")
        results.append({"claim": name, "slow_s": slow, "fast_s": quick, "ratio": round(ratio, 1),
                        "paper_ratio": paper})
    print("R-CNN CNN time extrapolated from", rcnn["timed_regions"], "regions to 2000.")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump({"threads": args.threads, "image": os.path.basename(args.image), "claims": results,
                   "details": {"rcnn": rcnn, "fast_rcnn": fast, "selective_search": search,
                               "rpn_s": rpn_s, "rfcn": rfcn}}, handle, indent=2)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
