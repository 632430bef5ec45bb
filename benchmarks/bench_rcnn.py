"""R-CNN test time per image on the CPU: selective search, then the CNN on every warped region.

    python benchmarks/bench_rcnn.py [--image PATH] [--timed-regions 32] [--proposals 2000]
                                    [--repeats 3] [--threads 2] [--backbone vgg16]

Prints a table and writes benchmarks/results/rcnn.json. The paper's setting: selective search
"fast" mode with about 2000 proposals per image, each region warped to 224×224 for VGG16 (227
for the paper's AlexNet) and run through the whole CNN, then SVMs, box regressors and NMS.
Random weights (speed does not depend on them), on a real photo from ../shared/datasets/raccoon.

What is measured and what is extrapolated:

* selective search: measured in full on the image (``rcnn_zoo.proposals.selective_search``,
  fast mode, at most ``--proposals`` boxes; the count it returns is reported).
* CNN per region (warp + backbone + pool5 + fc6/fc7 + SVMs + regressors): VGG16 costs about
  31 GFLOPs per region, i.e. ~60 TFLOPs for 2000 regions — many minutes on two CPU cores — so
  only ``--timed-regions`` regions are run (median of ``--repeats``, after one warm-up run) and
  the time is **extrapolated linearly** to the number of proposals: ``t_cnn(N) = N · t/region``.
  Linear is right here: regions run in independent chunks of ``region_batch_size``, so the
  cost per region does not depend on N (the first, tracing call is excluded).
* regression + class-wise NMS: measured in full over N regions (random scores; if selective
  search returned fewer than N boxes, they are repeated with a 2 px jitter up to N).

Both totals are given: for the N = ``--proposals`` regions of the paper's setting
(``total_s``) and for the number selective search actually returned on this image
(``total_s_actual``; OpenCV's fast mode gives fewer than 2000 boxes of at least 16 px on a
650×417 photo).

``rcnn_test_time`` can be imported by the lead's speed benchmark.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import median_time  # noqa: E402

DEFAULT_IMAGE = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "datasets", "raccoon", "images", "raccoon-1.jpg"
)
DEFAULT_OUTPUT = os.path.join(os.path.dirname(__file__), "results", "rcnn.json")


def _region_flops(model):
    """FLOPs of the CNN on one warped region (2 per multiply-add; TF profiler)."""
    import tensorflow as tf  # noqa: PLC0415

    size = model.warp_size
    concrete = tf.function(lambda x: model.region_features(x)).get_concrete_function(
        tf.TensorSpec([1, size, size, 3], tf.float32)
    )
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return tf.compat.v1.profiler.profile(graph=concrete.graph, options=options).total_float_ops


def rcnn_test_time(image, backbone="vgg16", num_classes=20, num_proposals=2000, timed_regions=32,
                   repeats=3, proposal_mode="fast"):
    """Time R-CNN's test pipeline on one ``[H, W, 3]`` uint8 image.

    Returns a dict: ``selective_search_s`` (measured), ``num_proposals`` (what selective search
    returned, at most ``num_proposals``), ``cnn_s_per_region`` (measured on ``timed_regions``
    regions), ``cnn_s_extrapolated`` (× ``num_proposals``), ``nms_s`` (measured on
    ``num_proposals`` regions), ``total_s``, the same for the returned count
    (``cnn_s_actual``, ``total_s_actual``) and the FLOPs per region.
    """
    import tensorflow as tf  # noqa: PLC0415

    import keras  # noqa: PLC0415
    from rcnn_zoo.models.rcnn import RCNN, pad_for_warp  # noqa: PLC0415
    from rcnn_zoo.proposals import selective_search  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    model = RCNN(num_classes, backbone=backbone, proposal_mode=proposal_mode, max_proposals=num_proposals)

    start = time.perf_counter()
    proposals = selective_search(image, mode=proposal_mode, max_proposals=num_proposals)
    search_s = time.perf_counter() - start
    count = len(proposals)

    # The CNN on `timed_regions` of the proposals, in the chunks predict() uses.
    height, width = image.shape[:2]
    padded = pad_for_warp(image[None].astype("float32"), model.fill_pixel)
    sizes = tf.constant([[height, width]], tf.int32)
    score = model._function("score")
    timed = np.resize(proposals, (timed_regions, 4)).astype("float32")  # repeats if SS gave fewer
    chunk = model.region_batch_size

    def run_cnn():
        for begin in range(0, timed_regions, chunk):
            part = tf.constant(timed[begin:begin + chunk])
            outputs = score(padded, part, tf.zeros([len(part)], tf.int32), sizes)
            _ = [np.asarray(o) for o in outputs]

    per_region = median_time(run_cnn, repeats) / timed_regions

    # Regression, clipping and class-wise NMS over N regions, with random scores.
    rng = np.random.default_rng(0)
    many = np.resize(proposals, (num_proposals, 4))
    many[count:] += rng.uniform(-2, 2, many[count:].shape)
    many = np.clip(many, 0, [width, height, width, height]).astype("float32")
    scores = tf.constant(rng.normal(-1.0, 0.5, (1, num_proposals, num_classes)).astype("float32"))
    deltas = tf.constant(rng.normal(0.0, 0.05, (1, num_proposals, num_classes, 4)).astype("float32"))
    postprocess = model._function("postprocess")
    boxes = tf.constant(many[None])

    def run_nms():
        out = postprocess(boxes, scores, deltas, tf.constant(float(height)), tf.constant(float(width)))
        _ = [np.asarray(v) for v in out.values()]

    nms_s = median_time(run_nms, repeats)
    flops = _region_flops(model)
    cnn_total = per_region * num_proposals
    return {
        "backbone": backbone,
        "image_size": [int(height), int(width)],
        "warp_size": model.warp_size,
        "proposal_mode": proposal_mode,
        "num_proposals": count,
        "extrapolated_to": num_proposals,
        "timed_regions": timed_regions,
        "region_batch_size": chunk,
        "selective_search_s": round(search_s, 3),
        "cnn_s_per_region": round(per_region, 4),
        "cnn_s_extrapolated": round(cnn_total, 1),
        "nms_s": round(nms_s, 4),
        "total_s": round(search_s + cnn_total + nms_s, 1),
        "cnn_s_actual": round(per_region * count, 1),
        "total_s_actual": round(search_s + per_region * count + nms_s, 1),
        "gflops_per_region": round(flops / 1e9, 2),
        "achieved_gflops_per_s": round(flops / 1e9 / per_region, 1),
    }


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    parser.add_argument("--backbone", default="vgg16")
    parser.add_argument("--proposals", type=int, default=2000)
    parser.add_argument("--timed-regions", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    args = parser.parse_args()

    import tensorflow as tf  # noqa: PLC0415

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    image = np.asarray(Image.open(args.image).convert("RGB"))
    row = rcnn_test_time(image, backbone=args.backbone, num_proposals=args.proposals,
                         timed_regions=args.timed_regions, repeats=args.repeats)
    print(f"R-CNN test time per image, {row['image_size'][0]}x{row['image_size'][1]} image, "
          f"{args.threads} threads; CNN timed on {row['timed_regions']} regions and "
          f"EXTRAPOLATED linearly to {row['extrapolated_to']}")
    header = (f"{'backbone':<10}{'warp':>6}{'SS s':>8}{'#props':>8}{'CNN s/reg':>11}"
              f"{'CNN s (extrap.)':>17}{'NMS s':>8}{'total s':>9}{'GFLOP/reg':>11}{'GFLOP/s':>9}")
    total_actual = f"(for the {row['num_proposals']} proposals returned: {row['total_s_actual']} s)"
    print(header)
    print(f"{row['backbone']:<10}{row['warp_size']:>6}{row['selective_search_s']:>8}"
          f"{row['num_proposals']:>8}{row['cnn_s_per_region']:>11}{row['cnn_s_extrapolated']:>17}"
          f"{row['nms_s']:>8}{row['total_s']:>9}{row['gflops_per_region']:>11}"
          f"{row['achieved_gflops_per_s']:>9}")
    print(total_actual)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump({"threads": args.threads, "image": os.path.basename(args.image), "results": [row]},
                  handle, indent=2)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
