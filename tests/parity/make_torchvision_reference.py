"""Record torchvision's outputs on the synthetic checkpoints, for the PyTorch-free parity test.

Torch env only (``bash ../shared/tools/torchvision-venv.sh`` makes /tmp/torchvision-venv):

    /tmp/torchvision-venv/bin/python tests/parity/make_torchvision_reference.py [MODEL ...] [--seed N]

writes ``tests/parity/references/<MODEL>.npz``. Every number comes from torchvision's own code
paths (``model(images)`` with forward hooks on ``model.transform``, ``model.backbone``,
``model.rpn.anchor_generator``, ``model.rpn.filter_proposals`` and
``model.roi_heads.box_predictor``; ``model.roi_heads`` + ``model.transform.postprocess`` for the
external-proposal references): nothing is re-implemented here. See README.md for the key schema.
"""

import argparse
import io
import json
import os
import sys
import zlib

import numpy as np
import torch
import torchvision
from torchvision.models.detection.transform import resize_boxes

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import photos  # noqa: E402
import synthetic_checkpoint as sc  # noqa: E402

NUM_FEATURE_SAMPLES = 512
NUM_HEAD_ROWS = 64
NUM_FAST_PROPOSALS = 300
FAST_MODELS = ("fasterrcnn_resnet50_fpn",)
BUILDER_KWARGS = {"weights": None, "weights_backbone": None}


def level_rng(seed, *parts):
    return np.random.default_rng([int(seed)] + [zlib.crc32(str(p).encode()) for p in parts])


def to_tensor(array):
    return torch.from_numpy(np.array(array, copy=True)).permute(2, 0, 1).float() / 255


class Capture:
    """Forward hooks recording what torchvision computes inside one ``model(images)`` call."""

    def __init__(self, model):
        self.model = model
        self.records = {}
        self.handles = []
        self.handles.append(model.transform.register_forward_hook(self._hook("transform")))
        self.handles.append(model.backbone.register_forward_hook(self._hook("backbone")))
        self.handles.append(model.rpn.anchor_generator.register_forward_hook(self._hook("anchors")))
        self.handles.append(model.roi_heads.box_predictor.register_forward_hook(self._hook("box_predictor")))
        original = model.rpn.filter_proposals

        def filter_proposals(*args, **kwargs):
            out = original(*args, **kwargs)
            self.records["filter_proposals"] = out
            return out

        model.rpn.filter_proposals = filter_proposals  # instance attribute: same torchvision code
        self._original_filter = original

    def _hook(self, name):
        def hook(module, inputs, output):
            self.records[name] = output
        return hook

    def run(self, images):
        self.records = {}
        with torch.no_grad():
            detections = self.model(images)
        return detections, self.records

    def close(self):
        for handle in self.handles:
            handle.remove()
        del self.model.rpn.filter_proposals


def load_checked_state(model_name, seed, tmp_dir):
    """The synthetic state written by the project's writer, read back by torch.load, equal to
    make_state_dict's arrays."""
    state = sc.make_state_dict(sc.load_layout(model_name), seed)
    path = os.path.join(tmp_dir, f"{model_name}_seed{seed}.pth")
    sc.load_writer().write_zip_checkpoint(path, state)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    assert list(loaded) == list(state), "key order differs"
    for key, value in state.items():
        tensor = loaded[key]
        assert str(tensor.dtype).replace("torch.", "") == str(value.dtype), key
        assert tuple(tensor.shape) == value.shape, key
        assert np.array_equal(tensor.numpy(), value), key
    return loaded, state, path


def level_names(features, padded_size):
    """torchvision level key -> 'P<log2 stride>' (stride from the padded batch height), or the
    torchvision key itself when two levels have the same stride (torchvision's MobileNetV3 FPN
    returns two stride-32 maps, '0' and '1', plus 'pool')."""
    names = {}
    for key, value in features.items():
        stride = padded_size[0] / value.shape[-2]
        names[key] = f"P{int(round(np.log2(stride)))}"
    if len(set(names.values())) != len(names):
        names = {key: key for key in features}
    return names


def torchvision_strides(features, padded_size):
    """The integer strides torchvision's AnchorGenerator uses: padded size // feature size."""
    return {key: [padded_size[0] // v.shape[-2], padded_size[1] // v.shape[-1]] for key, v in features.items()}


def detections_arrays(det):
    return (det["boxes"].numpy().astype(np.float32), det["scores"].numpy().astype(np.float32),
            det["labels"].numpy().astype(np.int64))


def fast_proposals(seed, index, height, width):
    """Seeded boxes (xyxy, original pixels) of varied sizes and shapes inside the image."""
    rng = level_rng(seed, "fast", index)
    n = NUM_FAST_PROPOSALS
    smallest = min(4.0, 0.25 * min(height, width))
    side = np.exp(rng.uniform(np.log(smallest), np.log(max(height, width)), n))
    aspect = np.exp(rng.uniform(np.log(1 / 3), np.log(3), n))  # h / w
    w = np.minimum(side / np.sqrt(aspect), width)
    h = np.minimum(side * np.sqrt(aspect), height)
    x1 = rng.uniform(0, 1, n) * (width - w)
    y1 = rng.uniform(0, 1, n) * (height - h)
    boxes = np.stack([x1, y1, x1 + w, y1 + h], axis=1)
    return boxes.astype(np.float32)


def match_count(a, b, box_tol=1.0, score_tol=0.02):
    """How many detections of ``a`` have no counterpart (same label, boxes within box_tol px,
    scores within score_tol) in ``b``; and the max |score| difference of the matched ones."""
    boxes_a, scores_a, labels_a = a
    boxes_b, scores_b, labels_b = b
    unmatched, worst = 0, 0.0
    used = np.zeros(len(labels_b), bool)
    for i in range(len(labels_a)):
        candidates = np.where((labels_b == labels_a[i]) & ~used)[0]
        if len(candidates):
            err = np.abs(boxes_b[candidates] - boxes_a[i]).max(1)
            j = candidates[np.argmin(err)]
            if err.min() <= box_tol and abs(scores_b[j] - scores_a[i]) <= score_tol:
                used[j] = True
                worst = max(worst, float(abs(scores_b[j] - scores_a[i])))
                continue
        unmatched += 1
    return unmatched, worst


def reference(model_name, seed, images, tmp_dir, log):
    torch.manual_seed(0)
    loaded, state, pth_path = load_checked_state(model_name, seed, tmp_dir)
    model = getattr(torchvision.models.detection, model_name)(**BUILDER_KWARGS)
    model.load_state_dict(loaded, strict=True)
    model.eval()
    transform = model.transform
    rpn = model.rpn
    roi = model.roi_heads
    out = {}
    capture = Capture(model)
    meta_images = []
    singles = []
    level_map = None
    strides = {}

    for i, (name, array) in enumerate(images):
        (det,), rec = capture.run([to_tensor(array)])
        image_list, _ = rec["transform"]
        features = rec["backbone"]
        padded = list(image_list.tensors.shape[-2:])
        resized = list(image_list.image_sizes[0])
        if level_map is None:
            level_map = level_names(features, padded)
        strides[name] = torchvision_strides(features, padded)
        p = f"single/{i}"
        out[f"{p}/resized_size"] = np.array(resized, np.int64)
        out[f"{p}/padded_size"] = np.array(padded, np.int64)
        anchors = rec["anchors"][0].numpy().astype(np.float32)
        start = 0
        per_location = rpn.anchor_generator.num_anchors_per_location()
        for level_index, (key, value) in enumerate(features.items()):
            level = level_map[key]
            fmap = value[0].permute(1, 2, 0).numpy()  # NCHW -> HWC
            h, w, c = fmap.shape
            rng = level_rng(seed, name, level)
            idx = np.stack([rng.integers(0, h, NUM_FEATURE_SAMPLES), rng.integers(0, w, NUM_FEATURE_SAMPLES),
                            rng.integers(0, c, NUM_FEATURE_SAMPLES)], axis=1).astype(np.int32)
            out[f"{p}/features/{level}/shape"] = np.array([h, w, c], np.int64)
            out[f"{p}/features/{level}/index"] = idx
            out[f"{p}/features/{level}/value"] = fmap[idx[:, 0], idx[:, 1], idx[:, 2]].astype(np.float32)
            count = h * w * per_location[level_index]
            level_anchors = anchors[start:start + count]
            start += count
            out[f"{p}/anchors/{level}/count"] = np.array(count, np.int64)
            out[f"{p}/anchors/{level}/first5"] = level_anchors[:5]
            out[f"{p}/anchors/{level}/last5"] = level_anchors[-5:]
        assert start == len(anchors)
        boxes, scores = rec["filter_proposals"]
        out[f"{p}/proposals/boxes"] = boxes[0].numpy().astype(np.float32)
        out[f"{p}/proposals/scores"] = scores[0].numpy().astype(np.float32)
        class_logits, box_regression = rec["box_predictor"]
        out[f"{p}/box_head/class_logits"] = class_logits[:NUM_HEAD_ROWS].numpy().astype(np.float32)
        out[f"{p}/box_head/box_regression"] = box_regression[:NUM_HEAD_ROWS].numpy().astype(np.float32)
        arrays = detections_arrays(det)
        singles.append(arrays)
        out[f"{p}/boxes"], out[f"{p}/scores"], out[f"{p}/labels"] = arrays
        meta_images.append({"name": name, "height": int(array.shape[0]), "width": int(array.shape[1]),
                            "pixel_digest": photos.pixel_digest(array)})
        d_boxes, d_scores, d_labels = arrays
        log(f"  {model_name} single {i} {name}: resized {resized} padded {padded} proposals {len(boxes[0])} "
            f"detections {len(d_labels)} distinct labels {len(set(d_labels.tolist()))} "
            f"scores {d_scores.min() if len(d_scores) else float('nan'):.3f}..{d_scores.max() if len(d_scores) else float('nan'):.3f}")

    detections, rec = capture.run([to_tensor(array) for _, array in images])
    image_list, _ = rec["transform"]
    out["batch/padded_size"] = np.array(list(image_list.tensors.shape[-2:]), np.int64)
    batch_diffs = {}
    for j, det in enumerate(detections):
        arrays = detections_arrays(det)
        out[f"batch/{j}/resized_size"] = np.array(list(image_list.image_sizes[j]), np.int64)
        out[f"batch/{j}/boxes"], out[f"batch/{j}/scores"], out[f"batch/{j}/labels"] = arrays
        lost, worst = match_count(singles[j], arrays)
        gained, _ = match_count(arrays, singles[j])
        batch_diffs[images[j][0]] = {"single": len(singles[j][2]), "batch": len(arrays[2]),
                                     "single_unmatched_in_batch": lost, "batch_unmatched_in_single": gained,
                                     "max_matched_score_diff": worst}
        log(f"  {model_name} batch {j} {images[j][0]}: resized {list(image_list.image_sizes[j])} detections "
            f"{len(arrays[2])} (single {len(singles[j][2])}); single-only {lost}, batch-only {gained}, "
            f"max matched |score diff| {worst:.2e}")
    capture.close()

    fast_note = None
    if model_name in FAST_MODELS:
        for i, (name, array) in enumerate(images):
            with torch.no_grad():
                image_list, _ = transform([to_tensor(array)])
                features = model.backbone(image_list.tensors)
                original = [int(array.shape[0]), int(array.shape[1])]
                proposals = torch.from_numpy(fast_proposals(seed, i, *original))
                scaled = resize_boxes(proposals, original, list(image_list.image_sizes[0]))
                det, _ = roi(features, [scaled], image_list.image_sizes)
                det = transform.postprocess(det, image_list.image_sizes, [tuple(original)])[0]
            p = f"fast/{i}"
            out[f"{p}/proposals"] = proposals.numpy()
            out[f"{p}/proposals_resized"] = scaled.numpy().astype(np.float32)
            out[f"{p}/boxes"], out[f"{p}/scores"], out[f"{p}/labels"] = detections_arrays(det)
            log(f"  {model_name} fast {i} {name}: {len(proposals)} proposals -> detections {len(det['labels'])} "
                f"distinct labels {len(set(det['labels'].tolist()))}")
        fast_note = ("fast/{i}: proposals (original pixels, seeded) scaled by "
                     "torchvision.models.detection.transform.resize_boxes(proposals, original HW, resized HW), "
                     "then model.roi_heads(model.backbone(images.tensors), [scaled], images.image_sizes) and "
                     "model.transform.postprocess(..., images.image_sizes, [original HW])")

    meta = {
        "seed": seed,
        "state_digest": sc.state_digest(state),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "builder": f"torchvision.models.detection.{model_name}",
        "builder_kwargs": BUILDER_KWARGS,
        "num_classes": int(roi.roi_heads.box_predictor.cls_score.out_features),
        "batch_norm": sorted({f"{type(m).__name__} eps={m.eps}" for m in model.modules()
                              if isinstance(m, torch.nn.modules.batchnorm._NormBase)}),
        "images": meta_images,
        "transform": {"min_size": list(transform.min_size), "max_size": transform.max_size,
                      "image_mean": transform.image_mean, "image_std": transform.image_std,
                      "size_divisible": transform.size_divisible, "fixed_size": transform.fixed_size},
        "rpn": {"pre_nms_top_n_test": rpn._pre_nms_top_n["testing"], "post_nms_top_n_test": rpn._post_nms_top_n["testing"],
                "nms_thresh": rpn.nms_thresh, "score_thresh": rpn.score_thresh, "min_size": rpn.min_size,
                "anchor_sizes": [list(s) for s in rpn.anchor_generator.sizes],
                "aspect_ratios": [list(a) for a in rpn.anchor_generator.aspect_ratios]},
        "roi_heads": {"score_thresh": roi.score_thresh, "nms_thresh": roi.nms_thresh,
                      "detections_per_img": roi.detections_per_img,
                      "bbox_reg_weights": list(roi.box_coder.weights)},
        "levels": {v: k for k, v in level_map.items()},
        "anchor_strides": strides,
        "single_vs_batch": batch_diffs,
        "capture": {
            "input": "torch.from_numpy(uint8 HWC RGB).permute(2, 0, 1).float() / 255, one tensor per image",
            "resized_size": "model.transform output ImageList.image_sizes (H, W), forward hook on model.transform",
            "padded_size": "model.transform output ImageList.tensors.shape[-2:] (H, W)",
            "features": "forward hook on model.backbone (body + FPN); torchvision key -> P<log2 stride> in 'levels'; "
                        "index = (y, x, c) into the NCHW map of image 0 read as HWC, value = that element",
            "anchors": "forward hook on model.rpn.anchor_generator; per level (feature order) count = H*W*A, "
                       "first5/last5 rows xyxy in resized (padded-batch) pixels",
            "proposals": "return value of model.rpn.filter_proposals (instance attribute wrapper): boxes xyxy in "
                         "resized-image pixels, scores = sigmoid objectness, after the RPN's min-size filter, "
                         "score threshold and NMS",
            "box_head": "forward hook on model.roi_heads.box_predictor: (class_logits, box_regression) of the "
                        f"first {NUM_HEAD_ROWS} proposals (eval: the proposals in filter_proposals order)",
            "detections": "model(images) output: boxes xyxy in original pixels, scores, labels 1..90",
            "batch": "one model([all images]) call (a list of tensors of different sizes, padded by torchvision)",
            "fast": fast_note,
        },
        "checkpoint": f"written by tests/weights/torch_checkpoint_writer.py ({os.path.basename(pth_path)}), "
                      "torch.load(weights_only=True) gave tensors equal to make_state_dict's, "
                      "model.load_state_dict(strict=True)",
    }
    out["meta"] = np.array(json.dumps(meta, indent=1))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(sc.MODELS))
    parser.add_argument("--seed", type=int, default=sc.DEFAULT_SEED)
    parser.add_argument("--root", default=photos.DEFAULT_ROOT)
    parser.add_argument("--tmp", default="/tmp")
    parser.add_argument("--out", default=os.path.join(HERE, "references"))
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    images = photos.parity_images(args.root)
    os.makedirs(args.out, exist_ok=True)
    for model_name in args.models:
        arrays = reference(model_name, args.seed, images, args.tmp, lambda s: print(s, flush=True))
        path = os.path.join(args.out, model_name + ".npz")
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        with open(path, "wb") as f:
            f.write(buffer.getvalue())
        print(f"{model_name}: {len(arrays)} arrays -> {os.path.relpath(path)} ({os.path.getsize(path) / 1e6:.2f} MB)", flush=True)


if __name__ == "__main__":
    main()
