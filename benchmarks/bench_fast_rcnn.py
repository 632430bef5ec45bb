"""Fast R-CNN speed on the CPU: selective search per image, and detection with and without the
truncated SVD of fc6/fc7 (Fast R-CNN §3.1).

    python benchmarks/bench_fast_rcnn.py [--image PATH] [--repeats 3] [--threads 2]
                                         [--num-proposals 2000] [--skip-search] [--skip-model]

Prints two tables and writes benchmarks/results/fast_rcnn.json.

- Selective search (``rcnn_zoo.proposals.selective_search``, one OpenCV thread) in fast and
  quality mode, on the photo at its own size and shrunk to a longer side of 500 px (the
  library's default ``max_side``). The order of the boxes is seeded; the time does not depend
  on it.
- FastRCNN vgg16 (random weights: speed does not depend on them), the paper's test scale (600,
  max 1000), ``R`` proposals (selective search boxes topped up with random boxes so that all
  ``R`` rows are real proposals), 20 classes: whole-image latency, the backbone alone, and the
  rest (RoI pooling, fc6/fc7, predictor, NMS) by difference; uncompressed and with fc6 rank 1024,
  fc7 rank 256 (the paper's ranks). Both models are timed in turn within each repeat and the
  best of the repeats is reported (medians in the JSON): the CPU is shared. Multiply-adds of
  fc6/fc7 are counted by hand.

The functions ``bench_selective_search`` and ``bench_fast_rcnn`` return the table rows, for a
larger benchmark to call.
"""

import argparse
import json
import os
import sys
import statistics
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import timings  # noqa: E402

DEFAULT_IMAGE = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "datasets", "raccoon", "images", "raccoon-1.jpg"
)
DEFAULT_OUTPUT = os.path.join(os.path.dirname(__file__), "results", "fast_rcnn.json")
PAPER_RANKS = (1024, 256)


def load_image(path):
    """RGB uint8 ``[H, W, 3]`` pixels of an image file."""
    from PIL import Image  # noqa: PLC0415

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def bench_selective_search(image, modes=("fast", "quality"), max_sides=(None, 500), repeats=5,
                           num_threads=1, max_proposals=2000):
    """Seconds of ``selective_search`` per (mode, max_side): best and median of ``repeats``
    runs (quality mode: a third as many). Returns a list of dicts."""
    from rcnn_zoo.proposals import selective_search  # noqa: PLC0415

    rows = []
    for mode in modes:
        for max_side in max_sides:
            boxes = []

            def run(mode=mode, max_side=max_side, boxes=boxes):
                boxes[:] = [selective_search(image, mode=mode, max_side=max_side,
                                             max_proposals=max_proposals, num_threads=num_threads)]

            # Quality mode is slow: one timed run after no warm-up is enough to rank it.
            reps = repeats if mode == "fast" else max(1, repeats // 3)
            times = timings(run, reps, warmup=0 if mode == "quality" else 1)
            longest = max(image.shape[:2])
            searched = longest if max_side is None or longest <= max_side else max_side
            rows.append({
                "mode": mode,
                "image_size": list(image.shape[:2]),
                "searched_longer_side": int(searched),
                "opencv_threads": num_threads,
                "proposals": int(len(boxes[0])),
                "seconds": round(min(times), 3),
                "median_seconds": round(statistics.median(times), 3),
                "repeats": reps,
            })
    return rows


def proposals_for(image, num_proposals, seed=0):
    """``[1, R, 4]`` proposals: selective search (fast, 500 px) topped up with random boxes."""
    from rcnn_zoo.proposals import selective_search  # noqa: PLC0415

    height, width = image.shape[:2]
    boxes = selective_search(image, max_proposals=num_proposals)
    rng = np.random.default_rng(seed)
    missing = num_proposals - len(boxes)
    if missing > 0:
        x1 = rng.uniform(0, width - 16, missing)
        y1 = rng.uniform(0, height - 16, missing)
        x2 = rng.uniform(x1 + 16, width)
        y2 = rng.uniform(y1 + 16, height)
        boxes = np.concatenate([boxes, np.stack([x1, y1, x2, y2], 1).astype(np.float32)])
    return boxes[None, :num_proposals].astype(np.float32)


def fc_multiply_adds(model, num_rois):
    """Multiply-adds of fc6 + fc7 for ``num_rois`` RoIs, whole or factored."""
    total = 0
    for layer in (model.roi_heads.box_head.fc6, model.roi_heads.box_head.fc7):
        if hasattr(layer, "rank"):
            total += layer.first.kernel.shape[0] * layer.rank + layer.rank * layer.units
        else:
            total += layer.kernel.shape[0] * layer.units
    return int(total) * num_rois


def bench_fast_rcnn(image, num_proposals=2000, ranks=(None, PAPER_RANKS), repeats=5,
                    backbone="vgg16", min_size=600, max_size=1000, num_classes=20):
    """Latency of FastRCNN on one image with ``num_proposals`` proposals, per SVD setting.

    ``ranks``: ``None`` (uncompressed) or ``(fc6_rank, fc7_rank)`` entries. The models are
    timed in turn within each repeat (so a change of machine load hits them alike), after one
    warm-up call each. Returns a list of dicts with the best and the median of ``repeats``
    runs; the best is the one to compare on a shared machine.
    """
    import tensorflow as tf  # noqa: PLC0415

    import keras  # noqa: PLC0415
    import rcnn_zoo  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    base = rcnn_zoo.FastRCNN(num_classes=num_classes, backbone=backbone,
                             image_min_size=min_size, image_max_size=max_size)
    inputs = {
        "images": tf.constant(image[None].astype("float32")),
        "proposals": tf.constant(proposals_for(image, num_proposals)),
    }
    entries = []
    for setting in ranks:
        start = time.perf_counter()
        model = base if setting is None else base.compress_fc_layers(*setting)
        compress_seconds = time.perf_counter() - start
        infer = tf.function(lambda x, model=model: model(x, training=False))
        features = tf.function(
            lambda images, model=model: model.backbone(model.preprocess(images)[0], training=False)
        )
        runs = {
            "inference": lambda infer=infer: infer(inputs)["num_detections"].numpy(),
            "backbone": lambda features=features: [
                v.numpy() for v in features(inputs["images"]).values()
            ],
        }
        for run in runs.values():
            run()  # warm-up: tracing
        entries.append((setting, model, compress_seconds, runs, {name: [] for name in runs}))
    for _ in range(repeats):
        for _, _, _, runs, times in entries:
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)

    rows = []
    for setting, model, compress_seconds, _, times in entries:
        best = {name: min(values) for name, values in times.items()}
        resized = model.preprocess(inputs["images"])[0].shape[1:3]
        rows.append({
            "backbone": backbone,
            "fc6_rank": None if setting is None else setting[0],
            "fc7_rank": None if setting is None else setting[1],
            "input_size": list(image.shape[:2]),
            "resized_to": [int(resized[0]), int(resized[1])],
            "proposals": num_proposals,
            "ops": rcnn_zoo.ops.implementation(),
            "parameters_millions": round(model.count_params() / 1e6, 1),
            "fc_gmacs": round(fc_multiply_adds(model, num_proposals) / 1e9, 1),
            "inference_s": round(best["inference"], 3),
            "backbone_s": round(best["backbone"], 3),
            "roi_head_and_nms_s": round(best["inference"] - best["backbone"], 3),
            "inference_median_s": round(statistics.median(times["inference"]), 3),
            "backbone_median_s": round(statistics.median(times["backbone"]), 3),
            "repeats": repeats,
            "svd_compression_s": round(compress_seconds, 1) if setting is not None else None,
        })
    return rows


def print_tables(search_rows, model_rows):
    if search_rows:
        print(f"{'selective search':<18}{'image':>10}{'searched at':>13}{'boxes':>8}{'s/image':>10}")
        for r in search_rows:
            size = f"{r['image_size'][0]}x{r['image_size'][1]}"
            print(f"{r['mode']:<18}{size:>10}{r['searched_longer_side']:>13}{r['proposals']:>8}{r['seconds']:>10}",
                  flush=True)
    if model_rows:
        print(f"{'FastRCNN':<14}{'fc6/fc7 rank':>14}{'resized':>10}{'R':>6}{'params M':>10}{'fc GMAC':>9}"
              f"{'infer s':>9}{'trunk s':>9}{'head s':>9}")
        for r in model_rows:
            ranks = "full" if r["fc6_rank"] is None else f"{r['fc6_rank']}/{r['fc7_rank']}"
            size = f"{r['resized_to'][0]}x{r['resized_to'][1]}"
            print(f"{r['backbone']:<14}{ranks:>14}{size:>10}{r['proposals']:>6}{r['parameters_millions']:>10}"
                  f"{r['fc_gmacs']:>9}{r['inference_s']:>9}{r['backbone_s']:>9}{r['roi_head_and_nms_s']:>9}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow intra/inter-op threads")
    parser.add_argument("--num-proposals", type=int, default=2000)
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    args = parser.parse_args()

    load_at_start = [round(v, 2) for v in os.getloadavg()]
    import tensorflow as tf  # noqa: PLC0415

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    image = load_image(args.image)
    search_rows = [] if args.skip_search else bench_selective_search(image, repeats=args.repeats)
    print_tables(search_rows, [])
    model_rows = [] if args.skip_model else bench_fast_rcnn(
        image, num_proposals=args.num_proposals, repeats=args.repeats
    )
    print_tables([], model_rows)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(
            {
                "threads": args.threads,
                "image": os.path.basename(args.image),
                "load_average": {"start": load_at_start, "end": [round(v, 2) for v in os.getloadavg()]},
                "selective_search": search_rows,
                "fast_rcnn": model_rows,
            },
            handle,
            indent=2,
        )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
