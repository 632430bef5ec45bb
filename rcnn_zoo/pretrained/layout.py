"""Where a detector keeps the layers the weights code looks for, as paths inside a weights file.

The only module of :mod:`rcnn_zoo.pretrained` that knows layer paths. Two layouts are read:

- before the heads redesign: ``rpn_head/objectness/...``, ``box_head/...``,
  ``box_predictor/cls_score/...`` (in a ``.weights.h5`` often under ``layers/``);
- after it: ``layers/region_proposal_network/head/objectness/...``,
  ``layers/box_ro_i_head/box_head/...``, ``layers/box_ro_i_head/box_predictor/cls_score/...``
  (Keras names a module reached through the model's layer list by its snake-cased class name;
  a variable's own ``path`` stays ``box_predictor/cls_score/kernel``).

A path is a ``/``-separated string: a variable's ``path`` (``box_predictor/cls_score/kernel``)
or an HDF5 dataset key of a ``.weights.h5`` (``box_predictor/cls_score/vars/0``; ``vars/0`` is
a layer's first variable, the kernel, ``vars/1`` its second, the bias).
"""

# The class-specific predictor: its shapes depend on num_classes, so fine-tuning leaves it
# initialised. Named in messages as these two layers.
PREDICTOR = "box_predictor"
PREDICTOR_LAYERS = (f"{PREDICTOR}/cls_score", f"{PREDICTOR}/bbox_pred")


def _parts(path):
    return str(path).split("/")


def _ends_with(parts, tail):
    return parts[-len(tail):] == list(tail)


def is_predictor_variable(variable_path):
    """Whether a variable belongs to the class-specific predictor: a ``box_predictor`` layer at
    any depth (``box_predictor/cls_score/kernel``, ``roi_heads/box_predictor/bbox_pred/bias``)."""
    return PREDICTOR in _parts(variable_path)[:-1]


def is_class_score_kernel(key):
    """Whether an HDF5 key is the kernel of the predictor's classifier, ``[D, num_classes + 1]``
    (``box_predictor/cls_score/vars/0`` at any depth)."""
    parts = _parts(key)
    return _ends_with(parts, ("cls_score", "vars", "0")) and PREDICTOR in parts[:-3]


def is_rpn_objectness_bias(key):
    """Whether an HDF5 key is the bias of the RPN's objectness layer, ``[A]`` for ``A`` anchors
    per location: ``…/rpn_head/objectness/vars/1`` or ``…/region_proposal_network/…/head/objectness/vars/1``."""
    parts = _parts(key)
    if not _ends_with(parts, ("objectness", "vars", "1")):
        return False
    owners = parts[:-3]
    if "rpn_head" in owners:
        return True
    # The RPN module holds its head as ``head`` (Keras may put ``layers/`` between them).
    for module in ("region_proposal_network", "rpn"):
        if module in owners and "head" in owners[owners.index(module) + 1:]:
            return True
    return False
