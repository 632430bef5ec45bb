"""R-CNN at test time (Girshick et al. 2014, section 2.2): a Python loop over images, because
the proposals come from CPU code outside the graph.

    image → selective search (OpenCV, ``rcnn_zoo.proposals``) → proposals [R, 4]
          → chunks of ``region_batch_size`` regions through the TF graph → scores, deltas
          → regression, clipping and class-wise NMS over all regions of the image

``export`` writes the graph part (given proposals → detections) as a SavedModel for serving.

Shapes: ``B`` images, ``R`` proposals of an image, ``C`` classes, ``D`` = ``max_detections``.
"""

import keras
import numpy as np
import tensorflow as tf

from rcnn_zoo.export import export_saved_model
from rcnn_zoo.ops.warp import pad_for_warp
from rcnn_zoo.proposals import selective_search

_IMAGES = tf.TensorSpec([None, None, None, 3], tf.float32)  # prepared by pad_for_warp
_BOXES = tf.TensorSpec([None, 4], tf.float32)
_INDICES = tf.TensorSpec([None], tf.int32)
_SIZES = tf.TensorSpec([None, 2], tf.int32)


class RCNNInference:
    """``predict`` of :class:`~rcnn_zoo.models.rcnn.RCNN` (a mixin: ``self`` is the detector,
    with its ``_score_padded``, ``region_features``, ``_warp_padded`` and ``postprocess``)."""

    def _function(self, name):
        """tf.functions traced once for any number of regions and any image size (per
        classifier, so switching ``model.classifier`` takes effect): ``"score"`` and
        ``"features"`` take images prepared by ``pad_for_warp`` (once per image set, not per
        chunk), ``"postprocess"`` is :meth:`postprocess`."""
        key = (name, self.classifier)
        if key not in self._functions:
            if name == "score":
                fn = tf.function(self._score_padded, input_signature=[_IMAGES, _BOXES, _INDICES, _SIZES])
            elif name == "features":
                fn = tf.function(
                    lambda padded, boxes, indices, sizes: self.region_features(
                        self._warp_padded(padded, boxes, indices, sizes)
                    ),
                    input_signature=[_IMAGES, _BOXES, _INDICES, _SIZES],
                )
            elif name == "postprocess":
                fn = tf.function(
                    self.postprocess,
                    input_signature=[
                        tf.TensorSpec([None, None, 4], tf.float32),
                        tf.TensorSpec([None, None, self.num_classes], tf.float32),
                        tf.TensorSpec([None, None, self.num_classes, 4], tf.float32),
                        tf.TensorSpec([], tf.float32),
                        tf.TensorSpec([], tf.float32),
                    ],
                )
            else:
                raise KeyError(name)
            self._functions[key] = fn
        return self._functions[key]

    def propose(self, image):
        """Selective search boxes ``[R, 4]`` xyxy pixels of one ``[H, W, 3]`` image."""
        return selective_search(image, mode=self.proposal_mode, max_proposals=self.max_proposals)

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None,
                proposals=None, region_batch_size=None):
        """Detect objects in raw images (Python-level: not a Keras predict loop).

        For each image: selective search (CPU, OpenCV) unless ``proposals`` are given, then the
        TF graph (warp → CNN → scores and deltas) on chunks of ``region_batch_size`` regions,
        then regression, clipping and class-wise NMS over all regions of the image.

        Args:
            x: ``[B, H, W, 3]`` raw RGB pixels, a list of ``[H_i, W_i, 3]`` images of any sizes,
                or ``{"images": ..., "proposals": ...}``.
            batch_size, steps, callbacks: accepted for Keras compatibility and ignored (images
                are processed one by one).
            verbose: progress bar over images (``"auto"`` = 1).
            proposals: optional per-image ``[R_i, 4]`` boxes in ``bounding_box_format`` (or a
                zero-padded ``[B, R, 4]`` array) instead of selective search.
            region_batch_size: regions per forward pass (default the model's).

        Returns:
            dict of NumPy arrays ``boxes [B,D,4]`` (``bounding_box_format``, each image's own
            pixels), ``scores [B,D]``, ``labels [B,D]`` (−1 padding), ``num_detections [B]``.
        """
        del batch_size, steps, callbacks
        if isinstance(x, dict):
            if proposals is not None:
                raise ValueError("give proposals either inside x or as proposals=, not both")
            x, proposals = x["images"], x.get("proposals")
        images = [np.asarray(image) for image in (x if isinstance(x, (list, tuple)) else np.asarray(x))]
        if proposals is not None and len(proposals) != len(images):
            raise ValueError(f"{len(images)} images but proposals for {len(proposals)}")
        chunk = int(region_batch_size or self.region_batch_size)
        progress = keras.utils.Progbar(len(images)) if verbose not in (0, False) else None
        results = []
        for i, image in enumerate(images):
            height, width = image.shape[:2]
            if proposals is None:
                boxes = self.propose(image)
            else:
                given = np.asarray(proposals[i], np.float32).reshape(-1, 4)
                boxes = self._to_xyxy(given, height, width).numpy()
                boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
            results.append(self._detect_image(image, boxes, chunk))
            if progress is not None:
                progress.update(i + 1)
        return {key: np.stack([r[key] for r in results]) for key in results[0]} if results else {}

    def _detect_image(self, image, boxes, chunk):
        """One image ``[H,W,3]`` and its proposals ``[R,4]`` xyxy → detections (NumPy)."""
        height, width = image.shape[0], image.shape[1]
        padded = pad_for_warp(np.asarray(image, np.float32)[None], self.fill_pixel)
        sizes = tf.constant([[height, width]], tf.int32)
        score_fn = self._function("score")
        scores, deltas = [], []
        for start in range(0, len(boxes), chunk):
            part = tf.constant(boxes[start:start + chunk], tf.float32)
            s, d = score_fn(padded, part, tf.zeros([tf.shape(part)[0]], tf.int32), sizes)
            scores.append(s)
            deltas.append(d)
        if not scores:  # no proposal: nothing to detect
            boxes = np.zeros((1, 4), np.float32)
            scores = [tf.fill([1, self.num_classes], float("-inf"))]
            deltas = [tf.zeros([1, self.num_classes, 4])]
        out = self._function("postprocess")(
            tf.constant(boxes, tf.float32)[None],
            tf.concat(scores, 0)[None],
            tf.concat(deltas, 0)[None],
            tf.constant(float(height)),
            tf.constant(float(width)),
        )
        return {key: value.numpy()[0] for key, value in out.items()}

    def predict_image(self, image, proposals=None):
        """Detections of one ``[H, W, 3]`` image: :meth:`predict` without the batch axis."""
        out = self.predict([image], verbose=0, proposals=None if proposals is None else [proposals])
        return {key: value[0] for key, value in out.items()}

    def predict_on_batch(self, x):
        """Same as :meth:`predict` (so ``rcnn_zoo.evaluation`` can drive R-CNN)."""
        return self.predict(x, verbose=0)

    def export(self, filepath, format="tf_saved_model", verbose=True, input_type="image_tensor", **kwargs):
        """A SavedModel for TF Serving (Keras 3's export entry point): images and their
        selective-search ``proposals [B,R,4]`` (computed by the client, e.g. with
        :meth:`propose`) in, detections out; see :func:`rcnn_zoo.export.export_saved_model`.
        ``format="onnx"`` writes the same as an ONNX file (:func:`rcnn_zoo.onnx_export.export_onnx`)."""
        if format == "onnx":
            from rcnn_zoo.onnx_export import export_onnx  # noqa: PLC0415  (tf2onnx is optional)

            return export_onnx(self, filepath, input_type=input_type, verbose=verbose, **kwargs)
        if format != "tf_saved_model":
            raise ValueError(f"rcnn_zoo detectors export format 'tf_saved_model' or 'onnx', got {format!r}")
        return export_saved_model(self, filepath, input_type=input_type, verbose=verbose, **kwargs)
