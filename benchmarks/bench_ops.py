"""Benchmark the RoI ops: compiled kernels vs the pure-TensorFlow fallbacks, on CPU.

For each op and size, times the forward pass and forward + backward (gradient with respect to
the features for a fixed random upstream gradient), each as a ``tf.function``, after warm-up,
and reports the median over several runs. The four functions of a configuration run
interleaved, so that load from other processes affects compiled and fallback alike. Prints a table and writes ``benchmarks/results/ops.json``.

Sizes are those of a VGG16 / ResNet C4 detector at 800×800 (stride 16 → 50×50 map):
roi_pool and roi_align on 1×50×50×512 with 300 and 2000 RoIs at 7×7; ps_roi_pool on
1×50×50×(7·7·21) with 300 RoIs (k = 7, D = 21, R-FCN on VOC). RoIs are random boxes 16…400
pixels wide and tall inside the 800×800 image, spatial_scale 1/16.

    python benchmarks/bench_ops.py               # full run (a few minutes on 2 cores)
    python benchmarks/bench_ops.py --quick       # small smoke run, results not written
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import tensorflow as tf

from rcnn_zoo.ops import implementation, ps_roi_pool, roi_align, roi_pool

IMAGE_SIZE = 800
SPATIAL_SCALE = 1.0 / 16
RESULTS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "ops.json")


def random_rois(num_rois, rng, min_size=16.0, max_size=400.0, image_size=IMAGE_SIZE):
    """``[K, 5]`` float32 rows ``(0, x1, y1, x2, y2)``: boxes of min..max pixels in the image."""
    w = rng.uniform(min_size, max_size, num_rois)
    h = rng.uniform(min_size, max_size, num_rois)
    x1 = rng.uniform(0.0, image_size - w)
    y1 = rng.uniform(0.0, image_size - h)
    rois = np.stack([np.zeros(num_rois), x1, y1, x1 + w, y1 + h], axis=1)
    return tf.constant(rois, tf.float32)


def cases(quick):
    """``(name, op, features shape, K, kwargs)`` of every benchmarked configuration."""
    channels, side = (64, 25) if quick else (512, 50)
    counts = (50, 200) if quick else (300, 2000)
    ps_dim = 3 if quick else 21
    result = []
    for count in counts:
        result.append(("roi_pool", roi_pool, (1, side, side, channels), count,
                       {"pool_size": (7, 7), "spatial_scale": SPATIAL_SCALE}))
    for count in counts:
        result.append(("roi_align", roi_align, (1, side, side, channels), count,
                       {"pool_size": (7, 7), "spatial_scale": SPATIAL_SCALE}))
    result.append(("ps_roi_pool", ps_roi_pool, (1, side, side, 7 * 7 * ps_dim), counts[0],
                   {"group_size": 7, "output_dim": ps_dim, "spatial_scale": SPATIAL_SCALE}))
    return result


def build_functions(op, kwargs, impl, upstream):
    """``(forward, forward_backward)`` tf.functions of ``(features, rois)``."""

    @tf.function(autograph=False)
    def forward(features, rois):
        return op(features, rois, impl=impl, **kwargs)

    @tf.function(autograph=False)
    def forward_backward(features, rois):
        with tf.GradientTape() as tape:
            tape.watch(features)
            output = op(features, rois, impl=impl, **kwargs)
        return output, tape.gradient(output, features, output_gradients=upstream)

    return forward, forward_backward


def _call(fn, args):
    # .numpy() waits for the result (and copies it out, equally for both implementations).
    tf.nest.map_structure(lambda t: t.numpy(), fn(*args))


def time_interleaved(functions, args, warmup, repeats, budget_s):
    """``{name: (median ms, min ms, runs)}`` of every ``functions[name](*args)``.

    The functions run round-robin (one call each per round) so that load from other processes
    on a shared machine hits all of them alike; rounds stop after ``repeats``, or after the
    budget once there are at least 3.
    """
    for fn in functions.values():
        for _ in range(warmup):
            _call(fn, args)
    times = {name: [] for name in functions}
    start_all = time.perf_counter()
    for round_index in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            _call(fn, args)
            times[name].append((time.perf_counter() - start) * 1e3)
        if round_index >= 2 and time.perf_counter() - start_all > budget_s:
            break
    return {name: (statistics.median(t), min(t), len(t)) for name, t in times.items()}


def run(args):
    rng = np.random.default_rng(0)
    rows = []
    for name, op, shape, num_rois, kwargs in cases(args.quick):
        features = tf.constant(rng.standard_normal(shape), tf.float32)
        rois = random_rois(num_rois, rng)
        probe = op(features, rois, impl="fallback", **kwargs)
        upstream = tf.constant(rng.standard_normal(probe.shape), tf.float32)
        functions = {}
        for impl in ("compiled", "fallback"):
            forward, forward_backward = build_functions(op, kwargs, impl, upstream)
            functions[f"{impl}_forward"] = forward
            functions[f"{impl}_forward_backward"] = forward_backward
        timings = time_interleaved(functions, (features, rois), args.warmup, args.repeats,
                                   args.budget)
        row = {"op": name, "features": list(shape), "num_rois": num_rois, "params": kwargs}
        for key, (median, fastest, runs) in timings.items():
            row[f"{key}_ms"] = round(median, 3)
            row[f"{key}_min_ms"] = round(fastest, 3)
            row[f"{key}_runs"] = runs
        for label in ("forward", "forward_backward"):
            row[f"{label}_speedup"] = round(
                row[f"fallback_{label}_ms"] / row[f"compiled_{label}_ms"], 2
            )
        rows.append(row)
        print_row(row)
        sys.stdout.flush()
    return rows


HEADER = (f"{'op':<12} {'K':>5} | {'fwd compiled':>12} {'fwd fallback':>12} {'x':>6} | "
          f"{'f+b compiled':>12} {'f+b fallback':>12} {'x':>6}")


def print_row(row):
    print(
        f"{row['op']:<12} {row['num_rois']:>5} | "
        f"{row['compiled_forward_ms']:>10.1f}ms {row['fallback_forward_ms']:>10.1f}ms "
        f"{row['forward_speedup']:>5.1f}x | "
        f"{row['compiled_forward_backward_ms']:>10.1f}ms "
        f"{row['fallback_forward_backward_ms']:>10.1f}ms {row['forward_backward_speedup']:>5.1f}x"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, results not written")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first (tracing)")
    parser.add_argument("--repeats", type=int, default=9, help="timed rounds at most")
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds per configuration after which timing stops (>= 3 rounds)")
    parser.add_argument("--output", default=RESULTS_PATH, help="where to write the JSON results")
    args = parser.parse_args()

    if implementation() != "compiled":
        sys.exit("The compiled RoI ops are not loaded; build them first "
                 "(pip install --no-build-isolation -e .).")
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, float32, median of up to "
          f"{args.repeats} interleaved runs after {args.warmup} warm-up calls, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(HEADER)
    print("-" * len(HEADER))
    rows = run(args)
    if args.quick:
        return
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(
            {
                "tensorflow": tf.__version__,
                "python": platform.python_version(),
                "machine": platform.machine(),
                "cpu_count": os.cpu_count(),
                "dtype": "float32",
                "image_size": IMAGE_SIZE,
                "spatial_scale": SPATIAL_SCALE,
                "roi_sizes_px": [16, 400],
                "warmup": args.warmup,
                "max_repeats": args.repeats,
                "statistic": "median wall time (ms) of interleaved runs; *_min_ms the fastest",
                "load_average_1min": os.getloadavg()[0],
                "results": rows,
            },
            handle,
            indent=2,
        )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
