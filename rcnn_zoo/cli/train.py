"""``rcnn-zoo train``: its options (one per :class:`rcnn_zoo.training.TrainConfig` field, with
its defaults) and :func:`rcnn_zoo.training.train` on them. With ``--resume``, the options not
given again keep the first run's values (its ``config.json``)."""

import argparse
import dataclasses

from rcnn_zoo.cli.parsers import NumbersOrAuto, add_data_arguments
from rcnn_zoo.evaluation import METRICS
from rcnn_zoo.models.registry import DETECTORS
from rcnn_zoo.training import CLI_ANCHOR_SIZES, CLI_IMAGE_SIZES, DETECTOR_TRAINING, TrainConfig, train
from rcnn_zoo.training.config import DTYPE_POLICIES
from rcnn_zoo.training.distribute import DISTRIBUTE_MODES
from rcnn_zoo.training.record import earlier_arguments
from rcnn_zoo.training.schedules import OPTIMIZERS

__all__ = ["DESCRIPTION", "EXAMPLES", "HELP", "NAME", "add_arguments", "run"]

NAME = "train"
HELP = "train a detector on a VOC or COCO format dataset"
DESCRIPTION = (
    "Train a detector (--detector: Faster R-CNN by default, R-FCN, Fast R-CNN or R-CNN) on "
    "your data: from scratch, or fine-tuned from registered or saved "
    "weights with --model-arg weights=NAME_OR_FILE (backbone and anchors must match those "
    "weights; the class predictor is re-initialised when the class count differs).\n\n"
    "Writes into --output-dir: last.keras (after every epoch), best.keras (best validation "
    "mAP, when a validation split is given), history.csv (losses, lr, val_mAP per epoch), "
    "training_curves.png and config.json (these arguments and the class names).\n\n"
    "Interrupted? Run the same command again: it continues from the last finished epoch "
    "(backup/ in the output folder). Finished, and want more epochs? Add --resume and a "
    "larger --epochs: training continues from last.keras, its optimizer state included, "
    "with the options of the first run (config.json) except those given again, and the "
    "cosine learning-rate curve is stretched to the new length.\n\n"
    "Several machines: run the same command on each with --distribute multi-worker and its own "
    "TF_CONFIG (docs/distributed.md); --batch-size stays the global batch, and only the chief "
    "writes into --output-dir."
)
EXAMPLES = (
    "  # a VOC-style folder (images/, annotations/, train.txt, test.txt), small CPU model\n"
    "  rcnn-zoo train --data ../shared/datasets/raccoon --format voc --split train --val-split test \\\n"
    "      --backbone tiny --epochs 80 --random-crop 0.5 --zoom-out 1.5 --jitter --val-every 5 \\\n"
    "      --output-dir runs/raccoon\n"
    "  # everything else chosen for the data within 20 minutes (printed, and in config.json)\n"
    "  rcnn-zoo train --data ../shared/datasets/raccoon --time-budget 20m --output-dir runs/auto\n"
    "  # the same run, 40 more epochs (options not given are taken from runs/raccoon/config.json)\n"
    "  rcnn-zoo train --output-dir runs/raccoon --resume --epochs 120\n"
    "  # R-FCN, or Fast R-CNN on selective search proposals (cached in runs/fast/proposals/)\n"
    "  rcnn-zoo train --data ../shared/datasets/raccoon --detector rfcn --output-dir runs/rfcn\n"
    "  rcnn-zoo train --data ../shared/datasets/raccoon --detector fast_rcnn --output-dir runs/fast\n"
    "  # two machines, 2 images per step in all (1 each); host2 runs the same with index 1\n"
    "  TF_CONFIG='{\"cluster\": {\"worker\": [\"host1:12345\", \"host2:12345\"]}, "
    "\"task\": {\"type\": \"worker\", \"index\": 0}}' \\\n"
    "  rcnn-zoo train --data /shared/raccoon --batch-size 2 --distribute multi-worker --output-dir /shared/runs/r\n"
    "  # COCO format\n"
    "  rcnn-zoo train --format coco --annotations train.json --images train/ \\\n"
    "      --val-annotations val.json --val-images val/ --backbone resnet50_fpn --output-dir runs/coco\n"
)


def add_arguments(parser):
    """The options of ``rcnn-zoo train``."""
    defaults = TrainConfig()
    group = add_data_arguments(parser, "VOC training split: a name (<data>/<split>.txt or "
                               "ImageSets/Main/<split>.txt) or a file of stems (default: 'train' "
                               "if such a file exists, else every XML)")
    group.add_argument("--val-split", help="VOC validation split (enables val mAP and best.keras)")
    group.add_argument("--val-annotations", help="COCO validation JSON (enables val mAP and best.keras)")
    group.add_argument("--val-images", help="COCO validation image folder")
    add_model_options(parser.add_argument_group("model"), defaults)
    _add_schedule_options(parser.add_argument_group("schedule"), defaults)
    _add_augmentation_options(parser.add_argument_group("augmentation"), defaults)
    _add_output_options(parser.add_argument_group("validation and output"), defaults)
    parser.set_defaults(_train_parser=parser)  # which options were given again (--resume)


def add_model_options(group, defaults):
    """The "model" options: detector, backbone, image and anchor sizes in pixels, --model-arg."""
    trains = "; ".join(f"{name}: {DETECTOR_TRAINING[name]}" for name in DETECTORS).replace("%", "%%")
    group.add_argument("--detector", default=defaults.detector, metavar="NAME",
                       help=f"one of {', '.join(DETECTORS)}. How each trains: {trains}")
    from_backbones = "vgg16, resnet50, resnet101, resnet50_fpn, mobilenet_v3_large_fpn, tiny, tiny_fpn"
    group.add_argument("--backbone", default=defaults.backbone,
                       help=f"one of {from_backbones}; without network only 'tiny' and 'tiny_fpn' (group "
                       "norm, a stride-4 level for the RoIs of small objects; 1.5-1.8x tiny's step time) "
                       "are practical on a CPU (the others are large to train from scratch)")
    group.add_argument("--image-min-size", type=int, default=None,
                       help="resize so the shorter side is this (default: the backbone's; tiny: "
                       f"{CLI_IMAGE_SIZES['tiny'][0]})")
    group.add_argument("--image-max-size", type=int, default=None,
                       help="... unless the longer side would exceed this (default: the backbone's; tiny: "
                       f"{CLI_IMAGE_SIZES['tiny'][1]})")
    group.add_argument("--anchor-sizes", nargs="+", action=NumbersOrAuto, default=None, metavar="PX",
                       help="anchor sizes in pixels of the resized image (single-level RPN, tiny_fpn's "
                       "too: all on one level; FPN: one per level), or auto: fitted to the training boxes for "
                       "the highest anchor recall (see rcnn-zoo analyze), same count (default: the "
                       f"backbone's; tiny: {' '.join(map(str, CLI_ANCHOR_SIZES['tiny']))})")
    group.add_argument("--aspect-ratios", nargs="+", action=NumbersOrAuto, default=None, metavar="H/W",
                       help="anchor aspect ratios (height / width, every level), or auto: fitted as "
                       "--anchor-sizes auto is (default: 0.5 1 2)")
    group.add_argument("--model-arg", dest="model_args", action="append", metavar="KEY=VALUE",
                       help="any other argument of the detector's class (FasterRCNN, RFCN, FastRCNN, "
                       "RCNN), value as JSON, e.g. rpn_post_nms_top_n_test=50 or roi_head_dim=256; "
                       "R-CNN: warp_size=32 or max_proposals=200 (repeatable)")


def _add_schedule_options(group, defaults):
    """The "schedule" options: epochs, batch size, optimizer, learning rate, seed."""
    group.add_argument("--time-budget", metavar="DURATION", default=defaults.time_budget,
                       help="e.g. 20m, 90s, 1h30m: choose for the data, within this wall time, every option "
                       "not given: image size from the object sizes, augmentation, batch size and epochs "
                       "from step times measured on the run's batches, warm-up and validation interval; "
                       "printed with their reasons and stored in config.json ('choices')")
    group.add_argument("--epochs", type=int, default=defaults.epochs, help="total epochs")
    group.add_argument("--batch-size", type=int, default=defaults.batch_size,
                       help="images per step in all: the GLOBAL batch, shared equally by the replicas "
                       "with --distribute (a multiple of their number)")
    group.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer,
                       help="adam (AdamW when --weight-decay > 0) or sgd (momentum 0.9)")
    group.add_argument("--lr", type=float, default=defaults.lr,
                       help="peak learning rate: linear warm-up from 10%% then cosine decay to 1%%")
    group.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="decoupled weight decay")
    group.add_argument("--warmup-epochs", type=float, default=defaults.warmup_epochs, help="warm-up length")
    group.add_argument("--seed", type=int, default=defaults.seed, help="random seed (weights, shuffling, augmentation)")
    group.add_argument("--dtype-policy", choices=DTYPE_POLICIES, default=defaults.dtype_policy,
                       help="Keras dtype policy of the model: mixed_bfloat16 trains several times faster "
                       "on CPUs with AVX512_BF16 or AMX (float32 variables, bfloat16 compute)")
    group.add_argument("--distribute", choices=DISTRIBUTE_MODES, default=defaults.distribute,
                       help="none: this process alone; mirrored: the GPUs of this machine; multi-worker: one "
                       "process per machine, the cluster and this machine's task read from the TF_CONFIG "
                       "environment variable (docs/distributed.md). Not a run option: --resume does not "
                       "take it from config.json")


def _add_augmentation_options(group, defaults):
    """The "augmentation" options: flip, colour jitter, random crop, zoom out."""
    group.add_argument("--flip", type=float, default=defaults.flip, help="probability of a horizontal flip")
    group.add_argument("--jitter", action=argparse.BooleanOptionalAction, default=defaults.jitter,
                       help="random brightness, contrast, saturation and hue (--no-jitter: none, also with "
                       "--time-budget, whose recipe turns it on)")
    group.add_argument("--random-crop", type=float, default=defaults.random_crop, metavar="P",
                       help="probability of cropping a random window (boxes whose centre is inside are kept)")
    group.add_argument("--crop-min-scale", type=float, default=defaults.crop_min_scale,
                       help="smallest crop side, as a fraction of the image side")
    group.add_argument("--zoom-out", type=float, default=defaults.zoom_out, metavar="RATIO",
                       help="half of the images are placed on a canvas up to RATIO times larger (1 = off)")


def _add_output_options(group, defaults):
    """The "validation and output" options: val mAP, output folder, resume, verbosity."""
    group.add_argument("--val-every", type=int, default=defaults.val_every, help="compute val mAP every N epochs")
    group.add_argument("--metric", choices=METRICS, default=defaults.metric,
                       help="validation metric: voc (all-points AP@0.5), voc07 (11-point), coco (AP@[.5:.95])")
    group.add_argument("--output-dir", default=defaults.output_dir, help="where models, history and plots go")
    group.add_argument("--resume", action="store_true", help="continue a finished run from last.keras")
    group.add_argument("--verbose", type=int, choices=(0, 1, 2), default=defaults.verbose,
                       help="Keras fit verbosity: 1 progress bar, 2 one line per epoch, 0 silent")


def _given_options(parser, argv):
    """``dest`` of every option of ``parser`` that appears in ``argv``."""
    given = set()
    for action in parser._actions:
        for option in action.option_strings:
            if any(token == option or token.startswith(option + "=") for token in argv):
                given.add(action.dest)
    return given


def run(args):
    """Train as the options say; exit code 0."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields}
    given = _given_options(args._train_parser, args._argv)
    values["given"] = sorted(given & fields)  # what --time-budget's recipe leaves as it is
    if args.resume:
        # Options not given again keep the first run's values.
        earlier = earlier_arguments(args.output_dir)
        values.update({k: v for k, v in earlier.items() if k in fields and k not in given
                       and k not in ("resume", "output_dir", "distribute", "given")})
    train(TrainConfig(**values))
    return 0
