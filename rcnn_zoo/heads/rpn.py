"""Region Proposal Network head (Ren et al. 2015, "Faster R-CNN", section 3.1).

A 3×3 conv slides over each feature map, then two sibling 1×1 convs predict, for each of the A
anchors at every location, one objectness logit (sigmoid, as torchvision; the paper's 2-way
softmax is equivalent) and 4 box deltas. One head is shared across FPN levels.
``conv_depth`` > 1 stacks more 3×3 conv + ReLU layers (torchvision's ``RPNHead(conv_depth=2)``
of ``fasterrcnn_resnet50_fpn_v2``, which has no batch norm in the RPN).

Shapes: B images, level l of size H_l × W_l, A anchors per location.
"""

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="rcnn_zoo")
class RPNHead(layers.Layer):
    """``call([features_l [B,H_l,W_l,C]])`` → ``(objectness [B,ΣH_l·W_l·A], deltas [B,ΣH_l·W_l·A,4],
    per_level_objectness list, per_level_deltas list)``, flattened in (y, x, anchor) order to
    match :class:`~rcnn_zoo.layers.AnchorGenerator`.

    ``conv_depth`` 3×3 conv + ReLU layers precede the sibling 1×1 convs; they are named
    ``conv`` (depth 1, as always), then ``conv2``, ``conv3``, …
    """

    def __init__(self, num_anchors, channels=512, conv_depth=1, **kwargs):
        super().__init__(**kwargs)
        self.num_anchors = num_anchors
        self.channels = channels
        self.conv_depth = int(conv_depth)
        if self.conv_depth < 1:
            raise ValueError(f"RPNHead conv_depth must be at least 1, got {conv_depth!r}")
        init = keras.initializers.RandomNormal(stddev=0.01)
        self.convs = [
            layers.Conv2D(
                channels, 3, padding="same", activation="relu", kernel_initializer=init,
                dtype=self.dtype_policy, name="conv" if i == 0 else f"conv{i + 1}",
            )
            for i in range(self.conv_depth)
        ]
        self.conv = self.convs[0]
        self.objectness = layers.Conv2D(
            num_anchors, 1, kernel_initializer=init, dtype=self.dtype_policy, name="objectness"
        )
        self.deltas = layers.Conv2D(
            4 * num_anchors, 1, kernel_initializer=init, dtype=self.dtype_policy, name="deltas"
        )

    def build(self, input_shape):
        channels_in = input_shape[0][-1]
        for conv in self.convs:
            conv.build((None, None, None, channels_in))
            channels_in = self.channels
        self.objectness.build((None, None, None, self.channels))
        self.deltas.build((None, None, None, self.channels))
        self.built = True

    def call(self, features):
        level_logits, level_deltas = [], []
        for feature in features:
            hidden = feature
            for conv in self.convs:
                hidden = conv(hidden)
            batch = ops.shape(feature)[0]
            level_logits.append(ops.reshape(self.objectness(hidden), (batch, -1)))
            level_deltas.append(ops.reshape(self.deltas(hidden), (batch, -1, 4)))
        logits = ops.concatenate(level_logits, axis=1)
        deltas = ops.concatenate(level_deltas, axis=1)
        return logits, deltas, level_logits, level_deltas

    def get_config(self):
        config = super().get_config()
        config.update({"num_anchors": self.num_anchors, "channels": self.channels})
        if self.conv_depth != 1:
            config["conv_depth"] = self.conv_depth
        return config
