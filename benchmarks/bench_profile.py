"""Where the time of a Faster R-CNN step goes on the CPU, stage by stage, next to torchvision.

    python benchmarks/bench_profile.py [--input-size 800x1066] [--batches 1 2]
        [--policies float32 mixed_bfloat16] [--repeats 3] [--threads 2] [--no-torchvision] [--no-onnx]

For each dtype policy and batch size: the wall time (median of ``--repeats`` after a warm-up) of
inference and of one training step (``model.train_step`` in a ``tf.function``, as ``fit`` runs
it, SGD), ResNet-50-FPN with random weights on the raccoon-1 photo resized to ``--input-size``
(800×1066: torchvision's size for it, so neither library resizes further). One profiled run then
splits the step into stages (see ``profile_stages.py``): preprocess, backbone, FPN, RPN head,
anchors, proposals/NMS, target assignment, RoI pooling, box head, losses, postprocess, each with
its forward and gradient time, and the optimizer.

The same configuration is timed for torchvision in the same run (``torchvision_profile.py`` in
the venv of ``../shared/tools/torchvision-venv.sh``), stage by stage, and under ONNX Runtime on
torchvision's ONNX export, and rcnn_zoo's own ONNX export under ONNX Runtime. The machine's measured ceiling (a large matmul and a 3×3 conv, each
dtype) puts the achieved FLOP/s in proportion. Prints tables, writes
``benchmarks/results/profile.json``.
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from profile_stages import STAGES, profile_step  # noqa: E402
from timing import median_time  # noqa: E402

DEFAULT_IMAGE = os.path.join(HERE, "..", "..", "shared", "datasets", "raccoon", "images", "raccoon-1.jpg")
TORCH_PYTHON = "/tmp/torchvision-venv/bin/python"
TORCH_SCRIPT = os.path.join(HERE, "torchvision_profile.py")


def fetched(function, *args):
    """``function(*args)`` as a call that returns only once every output is in NumPy (TF
    dispatches asynchronously: timing the call alone would time the dispatch)."""
    import tensorflow as tf  # noqa: PLC0415

    def run():
        result = function(*args)
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, result)

    return run


def ceiling(repeats=5):
    """Measured GFLOP/s of a 2048³ matmul and a 3×3 256→256 conv on 200×272, per dtype."""
    import tensorflow as tf  # noqa: PLC0415

    results = {}
    for dtype in ("float32", "bfloat16"):
        a = tf.random.normal([2048, 2048], dtype=tf.float32)
        a = tf.cast(a, dtype)
        matmul = tf.function(lambda x: tf.matmul(x, x))
        seconds = median_time(fetched(matmul, a), repeats)
        results[f"matmul_{dtype}"] = round(2 * 2048**3 / seconds / 1e9, 1)
        x = tf.cast(tf.random.normal([1, 200, 272, 256]), dtype)
        w = tf.cast(tf.random.normal([3, 3, 256, 256]), dtype)
        conv = tf.function(lambda x, w: tf.nn.conv2d(x, w, 1, "SAME"))
        seconds = median_time(fetched(conv, x, w), repeats)
        results[f"conv3x3_{dtype}"] = round(2 * 9 * 256 * 256 * 200 * 272 / seconds / 1e9, 1)
    return results


def conv_matmul_flops(model, batch):
    """Multiply-add FLOPs (×2) of the convolutions and matmuls of one inference pass.

    Counted by TF's profiler on the backbone + FPN at the padded input size, the RPN head on
    those maps and the box head on ``rpn_post_nms_top_n`` RoIs, each traced with static shapes
    (the whole model's graph has data-dependent shapes the counter cannot follow).
    """
    import tensorflow as tf  # noqa: PLC0415

    def count(function, *specs):
        concrete = tf.function(function).get_concrete_function(*specs)
        options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        options["output"] = "none"
        return tf.compat.v1.profiler.profile(graph=concrete.graph, options=options).total_float_ops

    normalised = model.preprocess(batch)[0]
    features = model.backbone(normalised)
    levels = [features[name] for name in model.rpn_feature_names]
    total = count(lambda x: model.backbone(x), tf.TensorSpec(normalised.shape, normalised.dtype))
    total += count(lambda *xs: model.rpn.head(list(xs)), *[tf.TensorSpec(t.shape, t.dtype) for t in levels])
    heads = model.roi_heads
    rois = model.rpn.proposal_layer.post_nms_top_n_test * int(batch.shape[0])
    size = heads.pool_size
    pooled = tf.TensorSpec([rois, size, size, levels[0].shape[-1]], levels[0].dtype)
    return total + count(lambda p: heads.box_predictor(heads.box_head(p)), pooled)


def detector(policy, size):
    import keras  # noqa: PLC0415

    import rcnn_zoo  # noqa: PLC0415

    keras.mixed_precision.set_dtype_policy(policy)
    keras.utils.set_random_seed(0)
    model = rcnn_zoo.FasterRCNN(num_classes=20, backbone="resnet50_fpn",
                                image_min_size=min(size), image_max_size=1333)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.001, momentum=0.9))
    keras.mixed_precision.set_dtype_policy("float32")
    return model


def targets_for(image, batch):
    """One box covering the raccoon's middle, per image, in pixels ``xyxy``."""
    import tensorflow as tf  # noqa: PLC0415

    h, w = image.shape[:2]
    boxes = tf.constant([[[0.2 * w, 0.2 * h, 0.8 * w, 0.8 * h]]] * batch, tf.float32)
    return {"boxes": boxes, "labels": tf.zeros([batch, 1], tf.int32)}


def bench_rcnn_zoo(image, policy, batch_size, repeats):
    import tensorflow as tf  # noqa: PLC0415

    model = detector(policy, image.shape[:2])
    batch = tf.constant(np.repeat(image[None], batch_size, 0).astype("float32"))
    infer = tf.function(lambda x: model(x, training=False))
    step = tf.function(lambda x, y: model.train_step((x, y)))
    y = targets_for(image, batch_size)
    inference_s = median_time(fetched(infer, batch), repeats)
    train_s = median_time(fetched(step, batch, y), repeats)
    row = {
        "library": "rcnn_zoo", "policy": policy, "batch": batch_size,
        "inference_s": round(inference_s, 3), "train_step_s": round(train_s, 3),
        "inference_profile": profile_step(infer, (batch,), inference_s),
        "train_profile": profile_step(step, (batch, y), train_s),
    }
    if batch_size == 1:
        flops = conv_matmul_flops(model, batch)
        row["inference_gflops"] = round(flops / 1e9, 1)
        row["inference_gflop_per_s"] = round(flops / 1e9 / inference_s, 1)
    return row


def bench_rcnn_zoo_onnx(image, repeats, threads):
    """Median latency (s) of rcnn_zoo's own ONNX export (float32, batch 1) under ONNX Runtime,
    with the same thread count; ``None`` when tf2onnx or onnxruntime is missing."""
    import tempfile  # noqa: PLC0415

    try:
        import onnxruntime  # noqa: PLC0415
    except ImportError:
        return None
    model = detector("float32", image.shape[:2])
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "faster_rcnn.onnx")
        model.export(path, format="onnx", verbose=False)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feed = {"input_tensor": image[None]}
        seconds = median_time(lambda: session.run(None, feed), repeats)
    return round(seconds, 3)


def bench_torchvision(args):
    """The torchvision side, run in its own venv; ``None`` when the venv is missing."""
    if args.no_torchvision or not os.path.exists(TORCH_PYTHON):
        return None
    command = [TORCH_PYTHON, TORCH_SCRIPT, "--image", args.image, "--input-size", args.input_size,
               "--repeats", str(args.repeats), "--threads", str(args.threads),
               "--batches", *map(str, args.batches)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=7200)
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        return {"error": done.stderr[-500:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_rows(rows, torch):
    print(f"\n{'library':<12}{'policy':>16}{'batch':>6}{'infer s':>9}{'train s':>9}{'GFLOP/s':>9}")
    for r in rows:
        print(f"{r['library']:<12}{r['policy']:>16}{r['batch']:>6}{r['inference_s']:>9}"
              f"{r['train_step_s']:>9}{r.get('inference_gflop_per_s', ''):>9}")
    for r in (torch or {}).get("rows", []):
        print(f"{'torchvision':<12}{'float32':>16}{r['batch']:>6}{r['inference_s']:>9}{r['train_step_s']:>9}")
    if torch and "onnxruntime_s" in torch:
        print(f"{'onnxruntime':<12}{'float32':>16}{1:>6}{torch['onnxruntime_s']:>9}{'':>9}")


def print_profiles(rows, torch):
    torch_rows = {r["batch"]: r for r in (torch or {}).get("rows", [])}
    for r in rows:
        theirs = torch_rows.get(r["batch"], {}) if r["policy"] == "float32" else {}
        for mode in ("inference", "train"):
            stages = r[f"{mode}_profile"]["stages"]
            other = theirs.get(f"{mode}_stages", {})
            print(f"\n{mode}, {r['policy']}, batch {r['batch']} (ms; rcnn_zoo scaled to wall time)")
            print(f"{'stage':<20}{'fwd':>9}{'grad':>9}{'scaled':>9}{'share':>8}{'torchvision':>13}")
            for stage in STAGES:
                s = stages[stage]
                mine = s["forward_ms"] + s["gradient_ms"]
                if mine == 0 and stage not in other:
                    continue
                print(f"{stage:<20}{s['forward_ms']:>9}{s['gradient_ms']:>9}{s['scaled_ms']:>9}"
                      f"{s['share']:>8.1%}{other.get(stage, ''):>13}")
            for extra in ("gradient", "optimizer"):
                if extra in other and extra not in stages:
                    print(f"{extra:<20}{'':>35}{other[extra]:>13}")
            print("  largest unassigned:", r[f"{mode}_profile"]["top_other"][:4])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    parser.add_argument("--input-size", default="800x1066", help="HxW the photo is resized to")
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--policies", nargs="*", default=["float32", "mixed_bfloat16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-torchvision", action="store_true")
    parser.add_argument("--no-onnx", action="store_true", help="skip rcnn_zoo's ONNX export under onnxruntime")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "profile.json"))
    args = parser.parse_args()

    import tensorflow as tf  # noqa: PLC0415

    import rcnn_zoo  # noqa: PLC0415

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    height, width = (int(v) for v in args.input_size.lower().split("x"))
    image = np.asarray(Image.open(args.image).convert("RGB").resize((width, height), Image.BILINEAR))
    rows = [bench_rcnn_zoo(image, policy, b, args.repeats) for policy in args.policies for b in args.batches]
    onnx_s = None if args.no_onnx else bench_rcnn_zoo_onnx(image, args.repeats, args.threads)
    torch = bench_torchvision(args)
    result = {"threads": args.threads, "input_size": [height, width], "image": os.path.basename(args.image),
              "ops": rcnn_zoo.ops.implementation(), "ceiling_gflop_per_s": ceiling(),
              "rcnn_zoo": rows, "rcnn_zoo_onnxruntime_s": onnx_s, "torchvision": torch}
    print_rows(rows, torch)
    if onnx_s is not None:
        print(f"{'rcnn_zoo.onnx':<12}{'float32':>16}{1:>6}{onnx_s:>9}  (onnxruntime on rcnn_zoo's export)")
    print_profiles(rows, torch)
    print("\nceiling GFLOP/s:", result["ceiling_gflop_per_s"])
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(result, handle, indent=1)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
