"""``python -m rcnn_zoo.convert --from torchvision --input x.pth --output y.weights.h5``."""

import sys

from rcnn_zoo.convert.cli import main

sys.exit(main())
