"""What R-CNN's training stages read (Girshick et al. 2014, section 2.3): the candidate regions
of a training set, batches of warped regions for fine-tuning, and the CNN features of regions
for the SVMs and box regressors.

Shapes: ``N`` images, ``K`` regions over all images, ``S`` = ``warp_size``, ``P`` pool5 and
``F`` fc7 features. Boxes are xyxy pixels unless said otherwise.
"""

import numpy as np
import tensorflow as tf

from rcnn_zoo.ops import boxes as box_ops
from rcnn_zoo.ops.warp import pad_for_warp
from rcnn_zoo.proposals import compute_proposals
from rcnn_zoo.targets.regions import build_region_set, fine_tune_labels

# The original code scales fc7/pool5 features so their mean L2 norm over the training regions
# is 20 before training SVMs and regressors (rcnn_train.m, feat_norm_mean); C = 1e-3 and
# lambda = 1000 are tuned for that scale.
FEATURE_NORM = 20.0


def feature_scale(features):
    """The factor that brings the mean L2 norm of ``features [n, D]`` to :data:`FEATURE_NORM`."""
    return FEATURE_NORM / max(float(np.mean(np.linalg.norm(features, axis=1))), 1e-12)


def _draw(pool, count, seed_pair):
    """``count`` indices drawn uniformly, with replacement, from ``pool [n]`` int32."""
    if count == 0:
        return tf.zeros([0], tf.int32)
    picks = tf.random.stateless_uniform([count], seed_pair, 0, tf.shape(pool)[0], tf.int32)
    return tf.gather(pool, picks)


class RCNNRegionData:
    """The training data of :class:`~rcnn_zoo.models.rcnn.RCNN` (a mixin: ``self`` is the
    detector, with its ``bounding_box_format``, proposal settings, ``fill_pixel`` and warp)."""

    def prepare_regions(self, images, boxes, labels, proposals=None, cache_dir=None, verbose=0):
        """Candidate regions of a training set: ground-truth boxes plus proposals.

        Args:
            images: ``[N, H, W, 3]`` raw pixels or a list of images of any sizes.
            boxes: per image ``[G_i, 4]`` in ``bounding_box_format`` (or padded ``[N, G, 4]``).
            labels: per image ``[G_i]`` (``-1`` = padding).
            proposals: per image ``[R_i, 4]`` xyxy pixels (``rcnn_zoo.proposals`` format);
                ``None`` runs selective search with the model's settings through
                ``rcnn_zoo.proposals.compute_proposals`` (cached in ``cache_dir`` if given).
        Returns:
            a :class:`~rcnn_zoo.targets.regions.RegionSet` (kept in memory, with the images).
        """
        images = [np.asarray(image) for image in images]
        xyxy = []
        for image, image_boxes in zip(images, boxes):
            h, w = image.shape[:2]
            converted = box_ops.convert_format(
                tf.constant(np.asarray(image_boxes, np.float32).reshape(-1, 4)),
                self.bounding_box_format, "xyxy", height=float(h), width=float(w),
            )
            xyxy.append(box_ops.clip_to_image(converted, h, w).numpy())
        if proposals is None:
            proposals = compute_proposals(images, cache_dir=cache_dir, mode=self.proposal_mode,
                                          max_proposals=self.max_proposals, verbose=bool(verbose))
        return build_region_set(images, xyxy, labels, proposals, self.num_classes)

    def fine_tune_dataset(self, regions, num_batches, batch_size=128, foreground_fraction=0.25,
                          foreground_iou=0.5, seed=0):
        """Batches of warped regions for ``fine_tune`` (section 2.3).

        Labels from :func:`~rcnn_zoo.targets.regions.fine_tune_labels` (IoU ≥
        ``foreground_iou``: the box's class ``c + 1``, else background 0). Each batch draws
        ``round(batch_size · foreground_fraction)`` foreground regions (32 of 128) and
        background regions for the rest (96), uniformly with replacement, anew every epoch.

        Returns:
            ``tf.data.Dataset`` of ``num_batches`` × ``(regions [batch,S,S,3] float32 raw
            pixels, labels [batch] int32)``. The images are held in memory.
        """
        foreground, background, head_labels = fine_tune_labels(regions, foreground_iou)
        num_fg = int(round(batch_size * foreground_fraction)) if len(foreground) else 0
        num_bg = batch_size - num_fg if len(background) else 0
        if num_fg + num_bg == 0:
            raise ValueError("the region set is empty")
        if num_bg == 0:
            num_fg = batch_size
        padded = pad_for_warp(regions.images, self.fill_pixel, regions.image_sizes)
        sizes = tf.constant(regions.image_sizes)
        boxes = tf.constant(regions.boxes, tf.float32)
        image_index = tf.constant(regions.image_index)
        head_labels = tf.constant(head_labels)
        foreground = tf.constant(foreground, tf.int32)
        background = tf.constant(background, tf.int32)

        def batch(step, key):
            seed_pair = tf.stack([key, tf.cast(step, tf.int64)])
            picked = tf.concat(
                [_draw(foreground, num_fg, seed_pair), _draw(background, num_bg, seed_pair + 1)], 0
            )
            warped = self._warp_padded(
                padded, tf.gather(boxes, picked), tf.gather(image_index, picked), sizes
            )
            return warped, tf.gather(head_labels, picked)

        keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        dataset = tf.data.Dataset.zip((tf.data.Dataset.range(num_batches), keys))
        return dataset.map(batch, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    def extract_features(self, regions, indices=None, region_batch_size=None):
        """``(pool5 [n,P], fc7 [n,F])`` NumPy features of ``regions`` (rows ``indices``)."""
        indices = np.arange(len(regions)) if indices is None else np.asarray(indices)
        chunk = int(region_batch_size or self.region_batch_size)
        padded = pad_for_warp(regions.images, self.fill_pixel, regions.image_sizes)
        sizes = tf.constant(regions.image_sizes, tf.int32)
        features_fn = self._function("features")
        pool5 = np.zeros((len(indices), int(np.prod(self.pool5_shape))), np.float32)
        fc7 = np.zeros((len(indices), self.fc_dim), np.float32)
        for start in range(0, len(indices), chunk):
            rows = indices[start:start + chunk]
            p, f = features_fn(
                padded, tf.constant(regions.boxes[rows], tf.float32),
                tf.constant(regions.image_index[rows], tf.int32), sizes,
            )
            pool5[start:start + len(rows)] = p.numpy()
            fc7[start:start + len(rows)] = f.numpy()
        return pool5, fc7
