"""How much fewer multiplications could buy float32 inference: Winograd convolution probed on the
3×3 stride-1 convs of ResNet-50-FPN Faster R-CNN at 800×1088 (the profile's input, padded).

Float32 inference already runs at the machine's measured conv ceiling (``bench_profile.py``:
158 GFLOP/s over the whole model against 218 for one large 3×3 conv), so the only way left to be
much faster in float32 is to do fewer multiplications. Winograd's minimal filtering F(m×m, 3×3)
(Lavin & Gray, 2016) computes an m×m output tile from an (m+2)×(m+2) input tile with (m+2)²
multiplies per channel pair instead of 9·m²: 2.25× fewer for m = 2, 4× fewer for m = 4. What it
costs instead: transforming every input and output tile (memory-bound passes), and rounding error
that grows with m.

For each distinct 3×3 stride-1 conv shape in the model this script times TF's direct conv
(oneDNN) against F(2×2,3×3) and F(4×4,3×3) written as tile transforms + one batched matmul, the
transforms compiled by XLA (without XLA they are slower than the direct conv), and prints the
relative error against the direct conv. It then adds up the best saving over every such conv in
the model and sets it against the measured inference time and ONNX Runtime's, from
``benchmarks/results/profile.json``. Writes ``benchmarks/results/winograd.json``.

The Winograd code here is a measuring probe, not a part of rcnn_zoo.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import median_time  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

# (where, height, width, channels, how many in the model) for every 3×3 stride-1 conv of
# ResNet-50-FPN Faster R-CNN at 800×1088 (torchvision's ResNet: the stride sits on the first 3×3
# of layer2–4, so those three are excluded; the RPN head's conv runs on P2–P6).
CONVS = [
    ("res2 3×3", 200, 272, 64, 3),
    ("res3 3×3", 100, 136, 128, 3),
    ("res4 3×3", 50, 68, 256, 5),
    ("res5 3×3", 25, 34, 512, 2),
    ("FPN out + RPN, P2", 200, 272, 256, 2),
    ("FPN out + RPN, P3", 100, 136, 256, 2),
    ("FPN out + RPN, P4", 50, 68, 256, 2),
    ("FPN out + RPN, P5", 25, 34, 256, 2),
    ("RPN, P6", 13, 17, 256, 1),
]


def winograd_matrices(m):
    """``(Bᵀ, G, Aᵀ)`` of F(m×m, 3×3) for m = 2 or 4 (interpolation points 0, ±1, ±2, ∞)."""
    if m == 2:
        bt = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
        g = [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]
        at = [[1, 1, 1, 0], [0, 1, -1, -1]]
    else:
        bt = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
              [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]
        g = [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
             [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]
        at = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]
    return (np.array(bt, np.float32), np.array(g, np.float32), np.array(at, np.float32))


def _combine(coefficients, terms):
    """Σ cᵢ·tᵢ over the non-zero coefficients (±1 without a multiply)."""
    total = None
    for c, t in zip(coefficients, terms):
        if c == 0:
            continue
        term = t if c == 1 else (-t if c == -1 else float(c) * t)
        total = term if total is None else total + term
    return total


def winograd_conv(x, kernel, m):
    """``conv2d(x, kernel, stride 1, "SAME")`` by F(m×m, 3×3): x ``[B,H,W,C]``, kernel
    ``[3,3,C,K]`` → ``[B,H,W,K]``."""
    import tensorflow as tf  # noqa: PLC0415

    bt, g, at = winograd_matrices(m)
    alpha = m + 2
    batch, height, width, channels = x.shape
    filters = kernel.shape[-1]
    tiles_y, tiles_x = -(-height // m), -(-width // m)
    padded = tf.pad(x, [[0, 0], [1, tiles_y * m + 1 - height], [1, tiles_x * m + 1 - width], [0, 0]])
    # Bᵀ d B for every tile at once: tile row j of tile i is padded row i·m + j.
    rows = [padded[:, j: j + m * tiles_y: m] for j in range(alpha)]
    transformed = []
    for row in (_combine(bt[i], rows) for i in range(alpha)):
        columns = [row[:, :, j: j + m * tiles_x: m] for j in range(alpha)]
        transformed += [_combine(bt[i], columns) for i in range(alpha)]
    v = tf.reshape(tf.stack(transformed), [alpha * alpha, batch * tiles_y * tiles_x, channels])
    u = tf.reshape(tf.einsum("ij,jkcn,lk->ilcn", g, kernel, g), [alpha * alpha, channels, filters])
    products = tf.reshape(tf.matmul(v, u), [alpha, alpha, -1, filters])
    y = tf.tensordot(at, products, [[1], [0]])  # [m rows, alpha, tiles, K]
    y = tf.tensordot(at, y, [[1], [1]])  # [m cols, m rows, tiles, K]
    y = tf.reshape(y, [m, m, batch, tiles_y, tiles_x, filters])
    y = tf.transpose(y, [2, 3, 1, 4, 0, 5])
    return tf.reshape(y, [batch, tiles_y * m, tiles_x * m, filters])[:, :height, :width]


def probe(height, width, channels, repeats):
    """Milliseconds and relative error of the direct conv and each Winograd variant."""
    import tensorflow as tf  # noqa: PLC0415

    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((1, height, width, channels)).astype(np.float32))
    kernel = tf.constant((rng.standard_normal((3, 3, channels, channels)) / np.sqrt(9 * channels))
                         .astype(np.float32))
    variants = {"direct": tf.function(lambda x, k: tf.nn.conv2d(x, k, 1, "SAME"))}
    for m in (2, 4):
        variants[f"F({m}x{m},3x3)"] = tf.function(lambda x, k, m=m: winograd_conv(x, k, m), jit_compile=True)
    reference = variants["direct"](x, kernel).numpy()
    row = {}
    for name, function in variants.items():
        error = np.abs(function(x, kernel).numpy() - reference).max() / np.abs(reference).max()
        ms = 1000 * median_time(lambda f=function: f(x, kernel).numpy(), repeats)
        row[name] = {"ms": round(ms, 1), "relative_error": float(f"{error:.2e}")}
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", default=os.path.join(HERE, "results", "profile.json"))
    parser.add_argument("--output", default=os.path.join(HERE, "results", "winograd.json"))
    args = parser.parse_args()
    import tensorflow as tf  # noqa: PLC0415

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    rows, saving_ms = [], 0.0
    print(f"{'conv':20s} {'shape':>14s} {'n':>2s} {'direct ms':>10s} {'F(2,3) ms':>10s} {'F(4,3) ms':>10s}"
          f" {'err F(2,3)':>10s} {'err F(4,3)':>10s}")
    for where, height, width, channels, count in CONVS:
        row = probe(height, width, channels, args.repeats)
        best = min(v["ms"] for v in row.values())
        saving_ms += count * (row["direct"]["ms"] - best)
        rows.append({"conv": where, "height": height, "width": width, "channels": channels,
                     "count": count, **row})
        print(f"{where:20s} {f'{height}x{width}x{channels}':>14s} {count:2d} {row['direct']['ms']:10.1f}"
              f" {row['F(2x2,3x3)']['ms']:10.1f} {row['F(4x4,3x3)']['ms']:10.1f}"
              f" {row['F(2x2,3x3)']['relative_error']:10.1e} {row['F(4x4,3x3)']['relative_error']:10.1e}",
              flush=True)
    result = {"threads": args.threads, "convs": rows, "best_saving_s": round(saving_ms / 1000, 3)}
    if os.path.exists(args.profile):
        with open(args.profile) as f:
            profile = json.load(f)
        inference = next(r["inference_s"] for r in profile["rcnn_zoo"]
                         if r["policy"] == "float32" and r["batch"] == 1)
        ort = (profile.get("torchvision") or {}).get("onnxruntime_s")  # None: run without the venv
        result.update(inference_s=inference, onnxruntime_s=ort,
                      projected_inference_s=round(inference - saving_ms / 1000, 3))
        target = f"{0.8 * ort:.2f} s" if ort else "not measured"
        print(f"\nfloat32 inference {inference:.2f} s (profile.json); with every 3×3 conv at its best "
              f"variant {inference - saving_ms / 1000:.2f} s; 0.8× ONNX Runtime ({ort} s): {target}")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(args.output + ".tmp", args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
