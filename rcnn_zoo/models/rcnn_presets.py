"""R-CNN's defaults per backbone (plain data) and the names of its constructor arguments."""

# Per-backbone defaults for what the constructor leaves as None. The paper's AlexNet warps to
# 227 px; VGG16 uses 224 so pool5 is 7×7×512 as in VGG's own classifier (fc6 = 25088 → 4096).
BACKBONE_DEFAULTS = {
    "vgg16": {"warp_size": 224, "fc_dim": 4096, "fc_dropout": 0.5, "region_batch_size": 32},
    "tiny": {"warp_size": 64, "fc_dim": 256, "fc_dropout": 0.0, "region_batch_size": 256},
    # ResNet C4: conv5 takes 14×14 conv4 maps, i.e. 224 px regions; pool5 is its 2048-d average.
    "resnet50": {"warp_size": 224, "fc_dim": 1024, "fc_dropout": 0.0, "region_batch_size": 16},
    "resnet101": {"warp_size": 224, "fc_dim": 1024, "fc_dropout": 0.0, "region_batch_size": 16},
}
GENERIC_DEFAULTS = {"warp_size": 227, "fc_dim": 4096, "fc_dropout": 0.5, "region_batch_size": 32}
# Constructor arguments (a preset or .keras file given as weights= sets them) and those the model
# keeps as attributes of the same name, for get_config.
ARGUMENTS = ("num_classes", "backbone", "backbone_weights", "classifier", "warp_size", "context_padding",
             "bounding_box_format", "class_names", "score_threshold", "nms_threshold", "max_detections",
             "fc_dim", "fc_dropout", "proposal_mode", "max_proposals", "region_batch_size", "box_weights")
CONFIG_ATTRIBUTES = ("num_classes", "classifier", "warp_size", "context_padding", "bounding_box_format",
                     "class_names", "score_threshold", "nms_threshold", "max_detections", "fc_dim",
                     "fc_dropout", "proposal_mode", "max_proposals", "region_batch_size")
