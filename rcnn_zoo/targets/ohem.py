"""Online hard example mining (Shrivastava, Gupta, Girshick 2016), as R-FCN uses it.

Per image, the loss of every candidate RoI is computed in the forward pass; only the ``B`` RoIs
with the highest loss are trained on. Shapes: B images, S candidate RoIs per image.
"""

import tensorflow as tf

from rcnn_zoo.losses import smooth_l1


def per_roi_loss(labels, class_logits, target_deltas, box_deltas, beta=1.0):
    """Classification + box loss of each RoI, ``[B,S]``; ignored RoIs (label −1) get −inf.

    Args:
        labels: ``[B,S]`` head labels (0 background, c+1 foreground, −1 ignored).
        class_logits: ``[B,S,C+1]``; target_deltas, box_deltas: ``[B,S,4]`` (class-agnostic or
            the true class's slot already gathered).
    """
    labels = tf.cast(labels, tf.int32)
    logits = tf.cast(class_logits, tf.float32)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.maximum(labels, 0), logits)
    box = tf.reduce_sum(
        smooth_l1(tf.cast(box_deltas, tf.float32) - tf.cast(target_deltas, tf.float32), beta), axis=-1
    )
    loss = ce + tf.where(labels > 0, box, 0.0)
    return tf.where(labels >= 0, loss, float("-inf"))


def select_hard_examples(losses, labels, num_keep):
    """Keep the ``num_keep`` highest-loss RoIs of each image: returns new ``labels [B,S]`` with −1
    everywhere else (ties broken by position, the lower index wins).

    ``losses`` must be −inf for RoIs that are already ignored; no gradient flows through the choice.
    """
    losses = tf.stop_gradient(losses)
    k = tf.minimum(int(num_keep), tf.shape(losses)[1])
    values, index = tf.math.top_k(losses, k=k, sorted=True)
    chosen = tf.reduce_any(
        tf.equal(tf.range(tf.shape(losses)[1])[None, :, None], index[:, None, :])
        & tf.math.is_finite(values)[:, None, :],
        axis=-1,
    )
    return tf.where(chosen, tf.cast(labels, tf.int32), -1)
