"""Faster R-CNN speed on the CPU: inference latency and training step time, with FLOPs.

    python benchmarks/bench_faster_rcnn.py [--image PATH] [--repeats 5] [--threads 2]
        [--input-size 800x1066] [--policies float32 mixed_bfloat16]

Prints a table and writes benchmarks/results/faster_rcnn.json. Configurations: resnet50_fpn at
800 px (torchvision fasterrcnn_resnet50_fpn's setting; reference point: about 2.2 s per
800×1066 image on 2 threads) and vgg16 at 600 px (the paper's), random weights (speed does not
depend on them), on a real photo from ../shared/datasets/raccoon by default.

``--input-size HxW`` resizes the photo to exactly that size first (800x1066 is torchvision's
reference size, so the model does not resize it further); ``--policies`` adds rows under other
Keras dtype policies (``mixed_bfloat16`` uses oneDNN's bf16 kernels on CPUs with AVX512_BF16).

FLOPs are counted by TensorFlow's profiler on the backbone, RPN head and box head traced with
static shapes (2 FLOPs per multiply-add; the RoI ops and NMS are not counted; see
``bench_profile.conv_matmul_flops``).
"""

import argparse
import json
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_profile import conv_matmul_flops, fetched  # noqa: E402
from timing import median_time  # noqa: E402

DEFAULT_IMAGE = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "datasets", "raccoon", "images", "raccoon-1.jpg"
)
CONFIGS = (
    ("resnet50_fpn", 800, 1333),
    ("vgg16", 600, 1000),
)


def bench_config(backbone, min_size, max_size, image, repeats, policy="float32"):
    import tensorflow as tf  # noqa: PLC0415

    import keras  # noqa: PLC0415
    import rcnn_zoo  # noqa: PLC0415

    keras.mixed_precision.set_dtype_policy(policy)
    keras.utils.set_random_seed(0)
    model = rcnn_zoo.FasterRCNN(
        num_classes=20, backbone=backbone, image_min_size=min_size, image_max_size=max_size
    )
    batch = tf.constant(image[None].astype("float32"))
    infer = tf.function(lambda x: model(x, training=False))
    latency = median_time(fetched(infer, batch), repeats)
    flops = conv_matmul_flops(model, batch)

    boxes = tf.constant([[[0.2 * image.shape[1], 0.2 * image.shape[0],
                           0.8 * image.shape[1], 0.8 * image.shape[0]]]], tf.float32)
    targets = {"boxes": boxes, "labels": tf.constant([[0]], tf.int32)}
    model.compile()
    step = tf.function(lambda x, y: model.train_step((x, y)))
    train_time = median_time(fetched(step, batch, targets), max(2, repeats // 2))
    resized = model.preprocess(batch)[0].shape[1:3]
    keras.mixed_precision.set_dtype_policy("float32")
    return {
        "backbone": backbone,
        "policy": policy,
        "input_size": list(image.shape[:2]),
        "resized_to": [int(resized[0]), int(resized[1])],
        "ops": rcnn_zoo.ops.implementation(),
        "inference_s": round(latency, 4),
        "train_step_s": round(train_time, 4),
        "inference_gflops": round(flops / 1e9, 2),
        "achieved_gflops_per_s": round(flops / 1e9 / latency, 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results", "faster_rcnn.json"))
    parser.add_argument("--configs", nargs="*", default=[c[0] for c in CONFIGS])
    parser.add_argument("--input-size", default=None, help="HxW, e.g. 800x1066")
    parser.add_argument("--policies", nargs="*", default=["float32"])
    args = parser.parse_args()

    import tensorflow as tf  # noqa: PLC0415

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    photo = Image.open(args.image).convert("RGB")
    if args.input_size:
        height, width = (int(v) for v in args.input_size.lower().split("x"))
        photo = photo.resize((width, height), Image.BILINEAR)
    image = np.asarray(photo)
    rows = [
        bench_config(b, lo, hi, image, args.repeats, policy)
        for policy in args.policies
        for b, lo, hi in CONFIGS
        if b in args.configs
    ]
    header = (f"{'backbone':<14}{'policy':>16}{'resized':>12}{'ops':>10}{'infer s':>10}{'train s':>10}"
              f"{'GFLOPs':>10}{'GFLOP/s':>10}")
    print(header)
    for r in rows:
        size = f"{r['resized_to'][0]}x{r['resized_to'][1]}"
        print(f"{r['backbone']:<14}{r['policy']:>16}{size:>12}{r['ops']:>10}{r['inference_s']:>10}"
              f"{r['train_step_s']:>10}{r['inference_gflops']:>10}{r['achieved_gflops_per_s']:>10}")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump({"threads": args.threads, "image": os.path.basename(args.image), "results": rows}, handle, indent=2)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
