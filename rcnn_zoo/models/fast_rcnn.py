"""Fast R-CNN (Girshick 2015, "Fast R-CNN", ICCV), trained with the paper's multi-task loss.

    images ──→ backbone (one pass per image) ──┐
    proposals (selective search, given) ───────┴→ RoI pooling 7×7 → fc6 → fc7 ─┬→ softmax, C+1
                                                                                └→ class-specific deltas

Unlike Faster R-CNN the proposals come from outside the network (``rcnn_zoo.proposals``), so
the model input is a dict ``{"images": [B,H,W,3], "proposals": [B,R,4]}``.

Training follows §2.3: each image contributes ``roi_batch_size_per_image = 64`` RoIs, at most
25 % foreground (IoU ≥ 0.5 with a ground-truth box), the rest background (IoU in [0.1, 0.5)),
sampled from its proposals plus its ground-truth boxes. The paper's mini-batch of N = 2 images
(R = 128 RoIs) is simply a batch size of 2 in ``fit``. Regression targets are encoded with
weights (10, 10, 5, 5), i.e. divided by py-faster-rcnn's target stds (0.1, 0.1, 0.2, 0.2) (the
paper normalises them to zero mean and unit variance, §2.3 "Multi-task loss"); the loss is
``L_cls + L_loc`` with smooth L1 (λ = 1). The paper's horizontal flips belong in the input
pipeline; its multi-scale option is not implemented (single scale s = 600, max 1000).

At test time every proposal is scored, boxes are decoded per class and class-wise NMS (0.3, the
paper's code) keeps ``max_detections``. §3.1's truncated SVD of fc6/fc7 is
:meth:`FastRCNN.compress_fc_layers`.

Shapes: B images, R proposals per image (padded), S sampled RoIs per image (training), C
foreground classes, D = max_detections.
"""

import keras

from rcnn_zoo.heads.fast_rcnn import FCBoxHead
from rcnn_zoo.heads.roi_heads import BoxRoIHead
from rcnn_zoo.heads.svd import SVDFCBoxHead, compress_fc_box_head
from rcnn_zoo.models.detector import TwoStageDetector
from rcnn_zoo.models.inputs import prepare_proposals, unpack_images_and_proposals


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class FastRCNN(TwoStageDetector):
    """Fast R-CNN as a ``keras.Model``: ``compile()``, ``fit()``, ``predict()``, ``save()``.

    ``num_classes`` counts foreground classes only; labels are ``0 … num_classes−1``.

    Inputs: ``{"images": [B, H, W, 3] raw RGB pixels (uint8 or float 0..255, padded
    bottom/right), "proposals": [B, R, 4]}``, proposals in ``bounding_box_format`` and the
    pixels of ``images``, padded: a row is a proposal when it has positive width and height
    (zeros, or any empty/inverted/non-finite row, is padding; so is a box wholly outside the
    image). Padding rows are never sampled nor detected. ``rcnn_zoo.proposals`` computes
    selective search proposals (xyxy), pads them and builds datasets.

    Training targets: ``{"boxes": [B, G, 4], "labels": [B, G]}`` padded with label −1, boxes in
    ``bounding_box_format`` and image pixels. ``predict`` returns ``{"boxes" [B,D,4], "scores"
    [B,D], "labels" [B,D] (−1 padding), "num_detections" [B]}`` in the same format and pixels.

    Arguments as :class:`~rcnn_zoo.models.detector.TwoStageDetector`; backbones ``"vgg16"``
    (the paper's large model, default), ``"tiny"``, ``"resnet50"``/``"resnet101"`` (C4, conv5 as
    the RoI head), ``"resnet50_fpn"``, ``"mobilenet_v3_large_fpn"``, ``"tiny_fpn"`` (multi-level
    RoIAlign).
    Hyperparameters: the ``roi_*`` keywords of :class:`~rcnn_zoo.heads.roi_heads.BoxRoIHead`
    (defaults from the paper: 64 RoIs per image, 25 % foreground, background IoU [0.1, 0.5),
    fc6/fc7 of 4096) and the image rule (the paper's single scale: 600, max 1000; the tiny
    backbone keeps the input size). ``roi_fc6_rank``/``roi_fc7_rank`` are the truncated-SVD
    ranks set by :meth:`compress_fc_layers`. Post-processing: 0.05, NMS 0.3, 100 (the paper's code).
    """

    LOSS_NAMES = ("cls", "box")
    PRESET_DETECTOR = "FastRCNN"
    DEFAULT_BACKBONE = "vgg16"
    ROI_HEAD = BoxRoIHead
    IMAGE_RULE = dict(TwoStageDetector.IMAGE_RULE, image_min_size=600, image_max_size=1000)
    NAMED_DEFAULTS = dict(TwoStageDetector.NAMED_DEFAULTS, nms_threshold=0.3)
    # export_saved_model adds a "proposals" serving input for models that take them.
    takes_proposals = True
    # The model casts its inputs itself; never let a float16 policy round proposal pixels.
    AUTOCAST = False

    def build_stages(self, spec, hp):
        names = tuple(hp["roi_levels"]) if hp["roi_levels"] is not None else spec.feature_names[:1]
        self.roi_feature_names = names
        index = [spec.feature_names.index(name) for name in names]
        self.roi_heads = BoxRoIHead(
            self.num_classes, [spec.strides[i] for i in index], spec.channels[index[0]],
            res5=spec.res5 if spec.roi_head == "res5" else None, **self.roi_arguments(hp), name="roi_heads",
        )

    def call(self, inputs, training=False, ground_truth=None):
        """Detections on the given proposals; with ``ground_truth`` (training/evaluation), RoIs
        sampled from them and the outputs the losses need."""
        images, image_sizes, proposals = unpack_images_and_proposals(inputs, type(self).__name__)
        features, _, resized_sizes, _ = self.features(images, image_sizes, training)
        proposals, valid = prepare_proposals(proposals, self.bounding_box_format, image_sizes, resized_sizes)
        gt = self.ground_truth(ground_truth, image_sizes, resized_sizes)
        second = self.roi_heads.forward(
            [features[name] for name in self.roi_feature_names], proposals, valid, gt, training=training
        )
        if gt is None:
            return self.detections(second, image_sizes, resized_sizes)
        return {**second, "gt_boxes": gt[0], "gt_labels": gt[1]}

    # ------------------------------------------------------------------ truncated SVD
    def compress_fc_layers(self, fc6_rank=1024, fc7_rank=256):
        """Fast R-CNN §3.1: a new model whose fc6/fc7 are replaced by their truncated SVD.

        Each ``Dense`` ``W [in, out]`` becomes ``Dense(in → r, no bias)`` then ``Dense(r → out,
        the original bias)`` from the top-``r`` singular triplets (``np.linalg.svd``); every
        other variable is copied. The paper's ranks for VGG16 are 1024 (fc6) and 256 (fc7);
        ``None`` leaves a layer whole. This model is left unchanged.

        The result records the ranks in its config (``roi_fc6_rank``/``roi_fc7_rank``), so it
        saves and loads like any model. It is not compiled: call ``compile()`` to fine-tune.
        """
        box_head = self.roi_heads.box_head
        if not isinstance(box_head, (FCBoxHead, SVDFCBoxHead)):
            raise ValueError(
                f"truncated SVD needs a fully connected box head; backbone {self.backbone_name!r} "
                f"uses {type(box_head).__name__}"
            )
        head = compress_fc_box_head(box_head, fc6_rank, fc7_rank)
        config = self.get_config()
        config["roi_fc6_rank"] = fc6_rank
        config["roi_fc7_rank"] = fc7_rank
        compressed = type(self).from_config(config)
        pairs = [(compressed.backbone, self.backbone),
                 (compressed.roi_heads.box_predictor, self.roi_heads.box_predictor),
                 (compressed.roi_heads.box_head, head)]
        for target, source in pairs:
            target.set_weights(source.get_weights())
        copied = sum(len(target.weights) for target, _ in pairs)
        if copied != len(compressed.weights):
            raise RuntimeError(f"copied {copied} of {len(compressed.weights)} variables")
        return compressed
