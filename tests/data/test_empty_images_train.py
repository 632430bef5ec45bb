"""A photo without objects goes through the CLI's training pipeline (``training_dataset``) and a
training step. Run in a child process: the failure this guards against was a segmentation fault
(``Dataset.unbatch()`` on zero boxes, TF 2.21), which would take pytest down with it."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHILD = r'''
import sys
import numpy as np
from PIL import Image
import rcnn_zoo
from rcnn_zoo.data import DetectionDataset, DetectionRecord, training_dataset

folder = sys.argv[1]
records = []
for i, boxes in enumerate(([], [[4, 6, 40, 30]], [])):
    path = f"{folder}/img{i}.png"
    Image.fromarray(np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    records.append(DetectionRecord(path, f"img{i}", boxes, np.zeros(len(boxes), np.int32),
                                   np.zeros(len(boxes), bool), 48, 64))
dataset = DetectionDataset(records, ["thing"])
batches = training_dataset(dataset, batch_size=1, flip=0.0, seed=1)
counts = [int((targets["labels"] >= 0).numpy().sum()) for _, targets in batches]
assert sorted(counts) == [0, 0, 1], counts
model = rcnn_zoo.FasterRCNN(num_classes=1, backbone="tiny")
model.compile()
history = model.fit(batches, epochs=1, verbose=0)
assert np.isfinite(history.history["loss"][0]), history.history
print("ok", sorted(counts))
'''


def test_images_without_objects_train_in_the_cli_pipeline(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.returncode, result.stderr[-3000:])
    assert "ok [0, 0, 1]" in result.stdout
