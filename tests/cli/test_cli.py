"""The ``rcnn-zoo`` command line, run as users run it (``python -m rcnn_zoo.cli``) on a small VOC
tree written here: real JPEGs with one coloured rectangle each, and their XML files. Also the
library functions behind it (``rcnn_zoo.training``, ``evaluation``, ``visualization``)."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from rcnn_zoo import cli
from rcnn_zoo.errors import UsageError
from rcnn_zoo.evaluation import format_ap_table
from rcnn_zoo.training import TrainConfig, parse_model_args, train
from rcnn_zoo.visualization import plot_training_curves

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLASSES = ("blue", "red")
COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}
SUBCOMMANDS = ("demo", "analyze", "train", "evaluate", "predict", "export", "convert")


def run_cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "rcnn_zoo.cli", *map(str, args)], cwd=cwd or REPO,
                          env=env, capture_output=True, text=True, timeout=300)


def _write_voc_tree(root, count=6, size=(96, 128), seed=0):
    """``images/``, ``annotations/``, ``train.txt`` (first 4) and ``test.txt`` (the rest)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    height, width = size
    stems = []
    for i in range(count):
        stem = f"img{i}"
        name = CLASSES[i % 2]
        pixels = rng.integers(90, 160, (height, width, 3), dtype=np.uint8)
        w, h = int(rng.integers(30, 50)), int(rng.integers(30, 50))
        x1, y1 = int(rng.integers(4, width - w - 4)), int(rng.integers(4, height - h - 4))
        pixels[y1 : y1 + h, x1 : x1 + w] = COLOURS[name]
        Image.fromarray(pixels).save(root / "images" / f"{stem}.jpg", quality=95)
        # VOC XML: 1-based inclusive pixel indices.
        (root / "annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename>"
            f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
            f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x1 + 1}</xmin>"
            f"<ymin>{y1 + 1}</ymin><xmax>{x1 + w}</xmax><ymax>{y1 + h}</ymax></bndbox></object>"
            "</annotation>"
        )
        stems.append(stem)
    (root / "train.txt").write_text("\n".join(stems[:4]) + "\n")
    (root / "test.txt").write_text("\n".join(stems[4:]) + "\n")
    return root


def _history_epochs(path):
    with open(path, newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def _train_args(data, out, epochs):
    return ["train", "--data", data, "--format", "voc", "--split", "train", "--val-split", "test",
            "--backbone", "tiny", "--epochs", epochs, "--batch-size", 2, "--image-min-size", 96,
            "--image-max-size", 128, "--output-dir", out, "--verbose", 2]


@pytest.fixture(scope="module")
def voc_tree(tmp_path_factory):
    return _write_voc_tree(tmp_path_factory.mktemp("voc") / "shapes")


@pytest.fixture(scope="module")
def trained_run(voc_tree, tmp_path_factory):
    """One epoch of training, as a user runs it, with anchors fitted to the data."""
    out = tmp_path_factory.mktemp("run") / "out"
    first = run_cli(*_train_args(voc_tree, out, 1), "--anchor-sizes", "auto", "--aspect-ratios", "auto")
    assert first.returncode == 0, first.stderr[-3000:]
    epochs_after_first = _history_epochs(out / "history.csv")
    return {"out": out, "first": first, "epochs_after_first": epochs_after_first}


@pytest.fixture(scope="module")
def resumed_run(trained_run):
    """``--resume`` to two epochs, in this process (the same ``main``, without paying for a
    second TensorFlow start)."""
    import contextlib
    import io

    stdout = io.StringIO()
    # Only what changes: the data, model and schedule options come from the run's config.json.
    with contextlib.redirect_stdout(stdout):
        code = cli.main(["train", "--output-dir", str(trained_run["out"]), "--resume", "--epochs", "2"])
    assert code == 0
    return dict(trained_run, resume_output=stdout.getvalue())


# ------------------------------------------------------------------------------------ help


def test_main_help_lists_every_subcommand_with_examples():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for command in SUBCOMMANDS:
        assert command in result.stdout
    assert "examples:" in result.stdout


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_help_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert f"rcnn-zoo {command}" in text
    if command != "convert":  # convert's parser belongs to rcnn_zoo.convert.cli
        assert "examples:" in text and "rcnn-zoo " + command in text.split("examples:")[1]


def test_train_help_names_the_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    for option in ("--data", "--format", "--val-split", "--backbone", "--epochs", "--resume", "--output-dir"):
        assert option in text


# ------------------------------------------------------------------------------------ train


def test_train_writes_models_history_curves_and_config(resumed_run):
    out = resumed_run["out"]
    assert resumed_run["epochs_after_first"] == [0]
    for name in ("last.keras", "best.keras", "history.csv", "training_curves.png", "config.json"):
        assert (out / name).is_file(), name
    assert not (out / "backup").exists()  # removed once a run finishes
    config = json.loads((out / "config.json").read_text())
    assert config["class_names"] == list(CLASSES)
    assert config["arguments"]["backbone"] == "tiny" and config["arguments"]["epochs"] == 2
    assert config["arguments"]["image_min_size"] == 96  # kept from the first run by --resume
    assert [run["to_epoch"] for run in config["runs"]] == [1, 2]
    # --anchor-sizes/--aspect-ratios auto: printed before training, stored with its reason, used.
    assert "Anchors fitted to the 4 training boxes" in resumed_run["first"].stdout
    (fit,) = config["choices"]
    assert fit["choice"] == "anchors" and "anchor recall" in fit["reason"]
    assert fit["recall_after"]["recall@0.7"] >= fit["recall_before"]["recall@0.7"]
    assert config["arguments"]["anchor_sizes"] == "auto"
    assert config["model"]["anchor_sizes"] == fit["anchor_sizes"] and len(fit["anchor_sizes"][0]) == 4
    assert config["model"]["anchor_aspect_ratios"] == fit["aspect_ratios"] and len(fit["aspect_ratios"]) == 3
    with Image.open(out / "training_curves.png") as image:
        assert image.size[0] > 300


def test_resume_continues_the_history(resumed_run):
    assert "Resuming" in resumed_run["resume_output"]
    assert _history_epochs(resumed_run["out"] / "history.csv") == [0, 1]
    with open(resumed_run["out"] / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {"loss", "rpn_cls", "rpn_box", "cls", "box", "lr", "val_mAP"} <= set(rows[0])
    assert all(np.isfinite(float(row["loss"])) for row in rows)


def test_training_again_into_a_finished_run_needs_resume(resumed_run, voc_tree, capsys):
    code = cli.main(_stringify(_train_args(voc_tree, resumed_run["out"], 3)))
    assert code == 2
    assert "--resume" in capsys.readouterr().err


def test_interrupted_training_continues_when_the_command_is_rerun(voc_tree, tmp_path):
    import keras

    class Interrupted(Exception):
        pass

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise Interrupted

    config = TrainConfig(data=str(voc_tree), split="train", epochs=2, batch_size=2, image_min_size=96,
                         image_max_size=128, output_dir=str(tmp_path / "out"), verbose=0)
    with pytest.raises(Interrupted):
        train(config, callbacks=[Interrupt()])
    assert (tmp_path / "out" / "backup").is_dir()
    seen = []
    record = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: seen.append(epoch))
    result = train(config, callbacks=[record])
    assert seen == [1]
    assert _history_epochs(tmp_path / "out" / "history.csv") == [0, 1]
    assert result["epochs_done"] == 2


# ------------------------------------------------------------------------------------ evaluate, predict


def test_evaluate_prints_the_per_class_table_and_writes_json(resumed_run, voc_tree, tmp_path):
    output = tmp_path / "eval.json"
    result = run_cli("evaluate", "--model", resumed_run["out"] / "last.keras", "--data", voc_tree,
                     "--split", "test", "--metric", "voc", "voc07", "--output", output)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("class"))
    assert "AP@0.5 (VOC)" in header and "VOC07" in header
    assert any(line.startswith("blue") for line in lines) and any(line.startswith("red") for line in lines)
    assert any(line.startswith("mAP") for line in lines)
    saved = json.loads(output.read_text())
    assert saved["class_names"] == list(CLASSES) and saved["num_images"] == 2
    assert set(saved) >= {"voc", "voc07"} and len(saved["voc"]["per_class_AP"]) == 2


def test_predict_writes_pictures_and_json(resumed_run, voc_tree, tmp_path):
    out = tmp_path / "pred"
    result = run_cli("predict", "--model", resumed_run["out"] / "best.keras", "--images",
                     voc_tree / "images", "--output-dir", out, "--score-threshold", 0.0)
    assert result.returncode == 0, result.stderr[-3000:]
    detections = json.loads((out / "detections.json").read_text())
    assert len(detections) == 6
    for item in detections:
        assert os.path.isfile(item["output"]) and item["output"].endswith(".png")
        assert (item["width"], item["height"]) == (128, 96)
        assert len(item["boxes"]) == len(item["scores"]) == len(item["labels"]) == len(item["class_names"])
        for box, label, name in zip(item["boxes"], item["labels"], item["class_names"]):
            assert 0 <= box[0] <= box[2] <= 128 and 0 <= box[1] <= box[3] <= 96
            assert CLASSES[label] == name
        assert item["scores"] == sorted(item["scores"], reverse=True)


# ------------------------------------------------------------------------------------ errors


def test_a_missing_model_file_is_one_clear_line_and_exit_code_2(voc_tree, tmp_path):
    result = run_cli("evaluate", "--model", tmp_path / "nope.keras", "--data", voc_tree)
    assert result.returncode == 2
    assert "rcnn-zoo: error: model file not found:" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--data", "/no/such/folder", "--output-dir", "{tmp}/o"], "dataset folder not found"),
        (["train", "--data", "{voc}", "--split", "nosuchsplit", "--output-dir", "{tmp}/o"], "split file not found"),
        (["train", "--format", "coco", "--annotations", "{tmp}/x.json", "--output-dir", "{tmp}/o"],
         "COCO annotation file not found"),
        (["train", "--data", "{voc}", "--backbone", "nosuch", "--output-dir", "{tmp}/o"], "unknown backbone"),
        (["train", "--data", "{voc}", "--output-dir", "{tmp}/o", "--resume"], "nothing to resume"),
        (["train", "--data", "{voc}", "--detector", "fast_rcnn", "--aspect-ratios", "auto", "--output-dir",
          "{tmp}/o"], "has no anchors"),
        (["analyze", "--data", "{voc}", "--detector", "rcnn", "--anchor-sizes", "auto", "--output-dir",
          "{tmp}/o"], "has no anchors"),
        (["predict", "--model", "{tmp}/m.keras", "--images", "{tmp}/none.jpg", "--output-dir", "{tmp}/p"],
         "image not found"),
        (["predict", "--images", "{voc}/images", "--output-dir", "{tmp}/p"], "exactly one of --model"),
        (["export", "--model", "{voc}/train.txt", "--output", "{tmp}/s"], "expects a .keras file"),
    ],
)
def test_bad_paths_and_options_exit_with_code_2(argv, message, voc_tree, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path, voc=voc_tree) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("rcnn-zoo: error: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_an_unknown_format_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["evaluate", "--model", "m.keras", "--format", "yolo"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ helpers


def test_model_args_are_parsed_as_json():
    assert parse_model_args(["roi_head_dim=256", "anchor_sizes=[[32, 64]]", "roi_pooling=align",
                                 "image_min_size=null"]) == {
        "roi_head_dim": 256, "anchor_sizes": [[32, 64]], "roi_pooling": "align", "image_min_size": None,
    }
    with pytest.raises(UsageError):
        parse_model_args(["no_equals_sign"])


def test_ap_table_lists_classes_counts_and_means():
    results = {
        "class_names": ["cat", "dog"], "num_objects": {"cat": 3, "dog": 0}, "iou_threshold": 0.5,
        "voc": {"mAP": 0.5, "per_class_AP": [0.5, float("nan")]},
        "voc07": {"mAP": 0.25, "per_class_AP": [0.25, float("nan")]},
    }
    table = format_ap_table(results).splitlines()
    assert table[0].split()[:2] == ["class", "objects"]
    assert table[2].split() == ["cat", "3", "0.5000", "0.2500"]
    assert table[3].split() == ["dog", "0", "n/a", "n/a"]
    assert table[-1].split() == ["mAP", "3", "0.5000", "0.2500"]


def test_training_curves_are_drawn_without_matplotlib(tmp_path):
    history = tmp_path / "history.csv"
    history.write_text("epoch,box,cls,loss,lr,rpn_box,rpn_cls,val_mAP\n"
                       "0,0.3,0.5,1.4,0.001,0.05,0.5,nan\n1,0.2,0.3,0.9,0.0005,0.04,0.3,0.4\n"
                       "2,0.1,0.2,0.6,0.0001,0.03,0.2,0.6\n")
    path = plot_training_curves(history, tmp_path / "curves.png")
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape[0] > 400  # both panels: losses and mAP
    assert (np.abs(pixels.astype(int) - (148, 103, 189)).sum(-1) < 30).any()  # the mAP line


def _stringify(argv):
    return [str(a) for a in argv]


# ------------------------------------------------------------------------------------ named weights


def test_predict_with_registered_weights(voc_tree, tmp_path):
    pytest.importorskip("rcnn_zoo.weights")
    if not os.path.isfile(os.path.join(REPO, "weights", "shapes_tiny.weights.h5")):
        pytest.skip("weights/shapes_tiny.weights.h5 is not in this checkout")
    argv = ["predict", "--weights", "shapes", "--images", str(voc_tree / "images" / "img0.jpg"),
            "--output-dir", str(tmp_path / "p"), "--score-threshold", "0", "--verbose", "0"]
    assert cli.main(argv) == 0
    detections = json.loads((tmp_path / "p" / "detections.json").read_text())
    assert len(detections) == 1
    assert set(detections[0]["class_names"]) <= {"circle", "square", "triangle"}


def test_an_unknown_weights_name_is_a_one_line_error(voc_tree, tmp_path, capsys):
    pytest.importorskip("rcnn_zoo.weights")
    argv = ["predict", "--weights", "no_such_weights", "--images", str(voc_tree / "images"),
            "--output-dir", str(tmp_path / "p")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("rcnn-zoo: error: cannot load weights 'no_such_weights'") and len(err.splitlines()) == 1


def test_training_under_mixed_bfloat16_builds_a_bfloat16_model_and_restores_the_policy(voc_tree, tmp_path):
    """``--dtype-policy mixed_bfloat16``: the detector computes in bfloat16 with float32
    variables, its losses are finite, config.json records the policy, and the caller's global
    policy is back afterwards (a later model is float32 again)."""
    import keras

    config = TrainConfig(data=str(voc_tree), split="train", epochs=1, batch_size=2, image_min_size=96,
                         image_max_size=128, output_dir=str(tmp_path / "out"), verbose=0,
                         dtype_policy="mixed_bfloat16")
    result = train(config)
    model = result["model"]
    convs = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(layer.compute_dtype == "bfloat16" for layer in convs)
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    assert np.isfinite(float(result["history"][-1]["loss"]))
    assert json.loads((tmp_path / "out" / "config.json").read_text())["arguments"]["dtype_policy"] == "mixed_bfloat16"
    assert keras.mixed_precision.dtype_policy().name == "float32"
    with pytest.raises(UsageError, match="--dtype-policy"):
        train(TrainConfig(data=str(voc_tree), dtype_policy="bfloat17", output_dir=str(tmp_path / "bad")))
