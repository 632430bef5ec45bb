"""Reading weight files written before the detectors were built from RPN and RoI-head modules.

Keras stores a model's variables by the path it reaches them by. Up to rcnn_zoo commit df222d1 a
detector held its layers directly (``box_head/…``, ``box_predictor/…``, ``layers/rpn_head/…``,
R-FCN ``layers/position_sensitive_head/…``); now they sit in their modules
(``layers/region_proposal_network/head/…``, ``layers/box_ro_i_head/box_head/…``, …). A file
of the old layout is recognised by its top-level groups, and while it is read each new path is
looked up under its old name. ``.keras`` files and ``.weights.h5`` files go through the same
Keras reader, so both are covered (``tests/compat`` keeps files of each kind from before).
"""

# Where Keras puts a layer depends on how the model reaches it first: by attribute (its name) or
# through the model's ``layers`` list (the snake-cased class name). These are the new groups of
# the learned layers and the groups the same variables had before. Longest first.
OLD_PREFIXES = (
    ("layers/box_ro_i_head/box_predictor", "box_predictor"),
    ("layers/box_ro_i_head/box_head", "box_head"),
    ("layers/region_proposal_network/head", "layers/rpn_head"),
    ("layers/position_sensitive_ro_i_head", "layers/position_sensitive_head"),
)
# Top-level groups that only files of the old layout have.
OLD_GROUPS = ("box_predictor", "layers/rpn_head", "layers/position_sensitive_head")


def old_path(path, prefixes):
    """The path a variable group had in the old layout (``path`` itself if it did not move)."""
    for new, old in prefixes:
        if path == new or path.startswith(new + "/"):
            return old + path[len(new):]
    return path


def read_old_layout(store):
    """If ``store`` (the Keras reader of a whole weight file) holds the old layout, make it
    answer new paths with the old groups. Other stores are left alone."""
    h5_file = getattr(store, "h5_file", None)
    if h5_file is None or not hasattr(store, "get"):
        return
    if not any(group in h5_file for group in OLD_GROUPS):
        return
    get = store.get

    def get_old(path):
        return get(old_path(path, OLD_PREFIXES))

    store.get = get_old
