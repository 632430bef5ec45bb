"""The layer paths the weights code looks for, in the layout before the heads redesign
(``rpn_head/…``, ``box_predictor/…``) and after it (``rpn/head/…``, ``roi_heads/box_predictor/…``)."""

import pytest

from rcnn_zoo.pretrained import layout

# predicate → (paths it matches: before the redesign, then after it; paths it does not match)
CASES = {
    layout.is_predictor_variable: (  # a variable's path
        ["box_predictor/cls_score/kernel", "box_predictor/bbox_pred/bias",
         "roi_heads/box_predictor/cls_score/kernel", "roi_heads/box_predictor/bbox_pred/bias"],
        ["box_head/fc6/kernel", "rpn_head/objectness/bias", "roi_heads/box_head/fc6/kernel",
         "rpn/head/objectness/bias", "box_predictor_stats"],  # the last: a variable, not a layer
    ),
    layout.is_class_score_kernel: (  # an HDF5 key of a .weights.h5 (vars/0 the kernel)
        ["box_predictor/cls_score/vars/0", "layers/box_predictor/cls_score/vars/0",
         "roi_heads/box_predictor/cls_score/vars/0", "layers/roi_heads/layers/box_predictor/cls_score/vars/0",
         "layers/box_ro_i_head/box_predictor/cls_score/vars/0"],
        ["box_predictor/cls_score/vars/1", "box_predictor/bbox_pred/vars/0",
         "cls_score/vars/0", "roi_heads/cls_score/vars/0"],  # R-CNN's SVMs: no box predictor
    ),
    layout.is_rpn_objectness_bias: (  # an HDF5 key (vars/1 the bias)
        ["rpn_head/objectness/vars/1", "layers/rpn_head/objectness/vars/1",
         "rpn/head/objectness/vars/1", "layers/rpn/layers/head/objectness/vars/1",
         "layers/region_proposal_network/head/objectness/vars/1"],
        ["layers/rpn_head/objectness/vars/0", "rpn/head/deltas/vars/1",
         "roi_heads/box_head/objectness/vars/1", "head/objectness/vars/1", "head/rpn/objectness/vars/1"],
    ),
}
ROWS = [
    (predicate, path, expected)
    for predicate, (matching, other) in CASES.items()
    for paths, expected in ((matching, True), (other, False))
    for path in paths
]


@pytest.mark.parametrize("predicate, path, expected", ROWS, ids=[f"{p.__name__}:{k}" for p, k, _ in ROWS])
def test_layer_path_predicates(predicate, path, expected):
    assert predicate(path) is expected


def test_predictor_layers_are_named_as_messages_name_them():
    assert layout.PREDICTOR_LAYERS == ("box_predictor/cls_score", "box_predictor/bbox_pred")


def test_predicates_find_the_layers_of_a_saved_detector(tmp_path):
    """On a file this version writes, not only on strings: the class count and the anchors."""
    import rcnn_zoo
    from rcnn_zoo.pretrained import contents

    model = rcnn_zoo.FasterRCNN(3, backbone="tiny", anchor_sizes=((16, 32),))
    path = str(tmp_path / "tiny.weights.h5")
    model.save_weights(path)
    assert contents.checkpoint_num_classes(path) == 3
    assert contents.file_anchors_per_location(path) == 6  # 2 sizes × 3 aspect ratios
