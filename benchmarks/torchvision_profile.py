"""torchvision's side of ``bench_profile.py``: fasterrcnn_resnet50_fpn timed stage by stage.

Run in the torchvision venv (``../shared/tools/torchvision-venv.sh``), never imported by
rcnn_zoo. Prints one JSON line: per batch size, the median wall time (s) of inference and of one
SGD training step, and the milliseconds each stage took in one run (the stages' ``forward``
methods wrapped with a timer; backward is one stage, ``gradient``). Then the same photo under
ONNX Runtime on torchvision's ONNX export (batch 1, float32, the same thread count).
"""

import argparse
import collections
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.models.detection import roi_heads as roi_heads_module

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import median_time  # noqa: E402

TIMES = collections.Counter()


def timed(stage, function):
    """``function`` that adds its wall time (ms) to ``TIMES[stage]``."""

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        TIMES[stage] += (time.perf_counter() - start) * 1000.0
        return result

    return wrapper


def instrument(model):
    """Wrap the stages' methods of ``model`` (a torchvision FasterRCNN) with timers."""
    model.transform.forward = timed("preprocess", model.transform.forward)
    model.transform.postprocess = timed("postprocess", model.transform.postprocess)
    model.backbone.body.forward = timed("backbone", model.backbone.body.forward)
    model.backbone.fpn.forward = timed("FPN", model.backbone.fpn.forward)
    rpn = model.rpn
    rpn.head.forward = timed("RPN head", rpn.head.forward)
    rpn.anchor_generator.forward = timed("anchors", rpn.anchor_generator.forward)
    rpn.filter_proposals = timed("proposals/NMS", rpn.filter_proposals)
    rpn.assign_targets_to_anchors = timed("target assignment", rpn.assign_targets_to_anchors)
    rpn.compute_loss = timed("losses", rpn.compute_loss)
    heads = model.roi_heads
    heads.select_training_samples = timed("target assignment", heads.select_training_samples)
    heads.box_roi_pool.forward = timed("RoI pooling", heads.box_roi_pool.forward)
    heads.box_head.forward = timed("box head", heads.box_head.forward)
    heads.box_predictor.forward = timed("box head", heads.box_predictor.forward)
    heads.postprocess_detections = timed("postprocess", heads.postprocess_detections)
    roi_heads_module.fastrcnn_loss = timed("losses", roi_heads_module.fastrcnn_loss)


def fine_tuning_model():
    """fasterrcnn_resnet50_fpn as it is fine-tuned from pretrained weights, random weights:
    FrozenBatchNorm2d, conv1 + layer1 frozen (``trainable_backbone_layers=3``), num_classes 21.

    ``weights_backbone=None`` alone would give trainable BatchNorm2d and all layers trained,
    which is neither torchvision's fine-tuning setting nor rcnn_zoo's ``resnet50_fpn``.
    """
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor  # noqa: PLC0415
    from torchvision.ops import FrozenBatchNorm2d  # noqa: PLC0415

    torch.manual_seed(0)
    trunk = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(trunk, 3)
    return torchvision.models.detection.FasterRCNN(backbone, num_classes=21)


def bench_batch(image, batch_size, repeats):
    model = fine_tuning_model()
    instrument(model)
    tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
    images = [tensor.clone() for _ in range(batch_size)]
    h, w = image.shape[:2]
    box = torch.tensor([[0.2 * w, 0.2 * h, 0.8 * w, 0.8 * h]])
    targets = [{"boxes": box.clone(), "labels": torch.tensor([1])} for _ in range(batch_size)]
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trained, lr=0.001, momentum=0.9)

    def infer():
        model.eval()
        with torch.no_grad():
            model(images)

    def train():
        model.train()
        losses = model(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad()
        start = time.perf_counter()
        loss.backward()
        TIMES["gradient"] += (time.perf_counter() - start) * 1000.0
        start = time.perf_counter()
        optimizer.step()
        TIMES["optimizer"] += (time.perf_counter() - start) * 1000.0

    row = {"batch": batch_size, "inference_s": round(median_time(infer, repeats), 3)}
    TIMES.clear()
    infer()
    row["inference_stages"] = {k: round(v, 1) for k, v in TIMES.items()}
    row["train_step_s"] = round(median_time(train, repeats), 3)
    TIMES.clear()
    train()
    row["train_stages"] = {k: round(v, 1) for k, v in TIMES.items()}
    return row


def bench_onnxruntime(image, repeats, threads):
    """Median latency (s) of torchvision's ONNX export under ONNX Runtime, batch 1."""
    import onnxruntime  # noqa: PLC0415

    model = fine_tuning_model().eval()
    tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "fasterrcnn.onnx")
        torch.onnx.export(model, ([tensor],), path, opset_version=17, dynamo=False,
                          input_names=["images"], output_names=["boxes", "labels", "scores"])
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: tensor.numpy()}
        return round(median_time(lambda: session.run(None, feed), repeats), 3)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", required=True)
    parser.add_argument("--input-size", default="800x1066")
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.input_size.lower().split("x"))
    image = np.asarray(Image.open(args.image).convert("RGB").resize((width, height), Image.BILINEAR))
    result = {"torch": torch.__version__, "torchvision": torchvision.__version__,
              "rows": [bench_batch(image, b, args.repeats) for b in args.batches]}
    try:
        result["onnxruntime_s"] = bench_onnxruntime(image, args.repeats, args.threads)
    except Exception as error:  # noqa: BLE001 - report, keep the other figures
        result["onnxruntime_error"] = f"{type(error).__name__}: {error}"[:300]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
