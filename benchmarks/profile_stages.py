"""Per-stage breakdown of a TensorFlow step from the TF profiler's op events.

The profiler records every kernel the executor runs, named ``scope/…/op:OpType``; the name
scopes are the Keras layers' and the gradient ops carry a ``gradient_tape/`` prefix. A stage's
time is the summed duration of its ops (milliseconds). Ops can overlap on the inter-op threads,
so the sum can exceed the step's wall time; the shares are what to compare, and
``scaled_ms`` rescales them to the measured wall time.
"""

import collections
import glob
import re
import shutil
import tempfile

# Stage of an op, first match wins, tested on the lower-cased scope path without Keras' ``_N``
# suffixes. Order matters: the FPN's layers live inside the backbone's scope.
STAGE_RULES = (
    ("optimizer", r"^(sgd|adam|adamw|rmsprop|optimizer|loss_scale_optimizer)(/|$)"),
    ("preprocess", r"preprocess|normali[sz]|/resize|pad_to"),
    ("FPN", r"/fpn_|/p6|/extra_block"),
    ("backbone", r"/(conv[1-5]_|pool1|stem|block|resnet|vgg|mobilenet|tiny|backbone|expanded_conv|conv1)"),
    ("RPN head", r"rpn_head"),
    ("anchors", r"anchor"),
    ("proposals/NMS", r"proposal_layer|proposal"),
    ("target assignment", r"target|match|sampl|encode|assign"),
    ("RoI pooling", r"roi_pooler|roialign|roipool|roi_align|roi_pool|psroi"),
    ("box head", r"box_head|box_predictor|cls_score|bbox_pred"),
    ("losses", r"loss"),
    ("postprocess", r"detect|nms|decode|postprocess|classwise"),
)
_COMPILED = tuple((stage, re.compile(pattern)) for stage, pattern in STAGE_RULES)
_SUFFIX = re.compile(r"_\d+(?=/|$)")
STAGES = tuple(stage for stage, _ in STAGE_RULES) + ("other",)


def stage_of(scope):
    """``(stage, is_gradient)`` of an op's scope path, e.g. ``"gradient_tape/m/rpn/rpn_head/conv"``."""
    path = _SUFFIX.sub("", scope.lower())
    gradient = path.startswith("gradient_tape/")
    if gradient:
        path = path[len("gradient_tape/"):]
    for stage, pattern in _COMPILED:
        if pattern.search(path):
            return stage, gradient
    return "other", gradient


def _op_events(logdir):
    """``(scope, op type, duration ms)`` of every kernel event in a profiler log directory."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: PLC0415

    for path in glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as handle:
            space.ParseFromString(handle.read())
        for plane in space.planes:
            metadata = plane.event_metadata
            for line in plane.lines:
                for event in line.events:
                    name = metadata[event.metadata_id].name
                    # Kernel events are "scope/op:Type"; executor and Python events are not.
                    if ":" not in name or name.startswith(("ThreadpoolListener", "ExecutorState")):
                        continue
                    scope, op_type = name.rsplit(":", 1)
                    # Host-side dispatch events ("EagerLocalExecute: __inference_f") span whole
                    # functions; only kernels count.
                    if "::" in name or " " in scope or op_type.startswith(" ") or "/" not in scope and \
                            scope.startswith(("Eager", "KernelAndDevice", "TFE_", "FunctionRun")):
                        continue
                    yield scope, op_type, event.duration_ps / 1e9


def profile_step(step, args, wall_s):
    """Run ``step(*args)`` once under the TF profiler; return the per-stage table.

    Returns ``{"stages": {stage: {"forward_ms", "gradient_ms", "scaled_ms", "share"}},
    "op_total_ms", "top_other": [(scope, ms)]}``; ``scaled_ms`` = share × ``wall_s`` in ms.
    """
    import tensorflow as tf  # noqa: PLC0415

    logdir = tempfile.mkdtemp(prefix="rcnn_zoo_profile_")
    try:
        tf.profiler.experimental.start(logdir)
        result = step(*args)
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, result)
        tf.profiler.experimental.stop()
        events = list(_op_events(logdir))
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    forward = collections.Counter()
    gradient = collections.Counter()
    other = collections.Counter()
    for scope, _, ms in events:
        stage, is_gradient = stage_of(scope)
        (gradient if is_gradient else forward)[stage] += ms
        if stage == "other":
            other[_SUFFIX.sub("", scope)] += ms
    total = sum(forward.values()) + sum(gradient.values())
    stages = {}
    for stage in STAGES:
        spent = forward[stage] + gradient[stage]
        share = spent / total if total else 0.0
        stages[stage] = {
            "forward_ms": round(forward[stage], 1),
            "gradient_ms": round(gradient[stage], 1),
            "share": round(share, 4),
            "scaled_ms": round(share * wall_s * 1000.0, 1),
        }
    return {"stages": stages, "op_total_ms": round(total, 1),
            "top_other": [(name, round(ms, 1)) for name, ms in other.most_common(8)]}
