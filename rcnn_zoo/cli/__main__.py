"""``python -m rcnn_zoo.cli``: the ``rcnn-zoo`` console script."""

import sys

from rcnn_zoo.cli import main

sys.exit(main())
