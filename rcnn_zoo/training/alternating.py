"""Faster R-CNN's 4-step alternating training (Ren et al. 2015, section 3.2): the RPN and the
detection head trained in turn, the second pair of steps with the shared conv layers fixed.

Approximate joint training (the default, section 3.2 (ii)) needs none of this: it is one ``fit``
(:func:`rcnn_zoo.training.train`).
"""

__all__ = ["alternating_training"]


# Which parts train and which losses count in each of the four steps.
_STEPS = (
    # (name, trainable parts, losses that count)
    ("1: RPN", ("backbone", "rpn"), ("rpn_cls", "rpn_box")),
    ("2: detector", ("backbone", "roi_heads"), ("cls", "box")),
    ("3: RPN head, shared convs fixed", ("rpn",), ("rpn_cls", "rpn_box")),
    ("4: detector head, shared convs fixed", ("roi_heads",), ("cls", "box")),
)
# The detector's stages (the RPN's only learned layers are its head's).
_PARTS = ("backbone", "rpn", "roi_heads")


def alternating_training(model, dataset, epochs=(1, 1, 1, 1), optimizer=None, verbose=1, **fit_kwargs):
    """Faster R-CNN's 4-step alternating training (Ren et al. 2015, section 3.2).

    1. train the backbone and RPN with the RPN losses only;
    2. train the backbone and the detection head with the detection losses only, on proposals
       of the step-1 RPN;
    3. fix the shared conv layers, fine-tune the RPN head;
    4. fix the shared conv layers, fine-tune the detection head.

    The paper initialises step 2 from ImageNet in a second network; with one shared backbone
    step 2 continues from step 1 instead (as detectron-style reimplementations do). Each step
    compiles the model anew, so pass a factory for a fresh optimizer per step.

    Args:
        model: a :class:`~rcnn_zoo.FasterRCNN` or :class:`~rcnn_zoo.RFCN` (a detector with
            ``backbone``, ``rpn`` and ``roi_heads``).
        dataset: training data as for ``fit``.
        epochs: epochs of each of the four steps.
        optimizer: ``None`` (the detector's default) or a zero-argument callable returning a
            fresh optimizer.
        **fit_kwargs: passed to every ``fit`` call (``callbacks``, ``validation_data``, …).

    Returns:
        list of the four ``History`` objects.
    """
    if len(epochs) != 4:
        raise ValueError(f"epochs needs one entry per step (4), got {epochs}")
    trainable_before = {part: getattr(model, part).trainable for part in _PARTS}
    histories = []
    try:
        for (name, parts, losses), step_epochs in zip(_STEPS, epochs):
            for part in _PARTS:
                getattr(model, part).trainable = part in parts
            weights = {loss: (1.0 if loss in losses else 0.0) for loss in model.LOSS_NAMES}
            model.compile(optimizer=optimizer() if optimizer else None, loss_weights=weights)
            if verbose:
                print(f"Alternating training step {name}: {step_epochs} epoch(s)")
            histories.append(model.fit(dataset, epochs=step_epochs, verbose=verbose, **fit_kwargs))
    finally:
        for part, flag in trainable_before.items():
            getattr(model, part).trainable = flag
    return histories
