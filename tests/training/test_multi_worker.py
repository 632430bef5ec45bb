"""Training across machines with ``tf.distribute.MultiWorkerMirroredStrategy``, with two worker
processes on 127.0.0.1 (gRPC collectives, free ports picked by the test).

- ``model.fit`` under the strategy: both workers end with identical weights, equal (float
  tolerance) to ONE process training the same steps on the same global batches without any
  strategy; ``MultiWorkerBackupAndRestore`` writes the chief's backup only and restores it.
  With clipped gradients (checked on a ``MirroredStrategy`` of two logical CPUs, in one
  process), two replicas still train as one process.
- ``rcnn-zoo train --distribute multi-worker``: interrupted (Ctrl-C on both machines) after the
  first epoch and run again, it continues; only the chief wrote the run folder, the other
  worker wrote its files into a temporary folder of its own, removed at the end; the chief
  computed the validation mAP.
- A missing or malformed ``TF_CONFIG`` is a one-line error naming what is wrong.

Every child process has a timeout; on any failure all of them are killed and their logs shown.
"""

import csv
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from photo_copies import REPO

from rcnn_zoo.cli import main
from rcnn_zoo.errors import UsageError
from rcnn_zoo.training import TrainConfig, train
from rcnn_zoo.training.distribute import read_tf_config

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 240  # seconds for one launch of the workers (a hang fails the test instead of blocking)


# ------------------------------------------------------------------------------ helpers


def free_ports(count):
    """``count`` distinct free TCP ports on 127.0.0.1 (held open together while picked)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(ports, index):
    """TF_CONFIG of worker ``index`` of a cluster of workers on 127.0.0.1:``ports``."""
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def child_env(**extra):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def run_processes(commands, logs, timeout=TIMEOUT):
    """Run ``commands`` (``[(argv, env)]``) at once, stdout+stderr into the files ``logs``;
    return their exit codes. Any still running at ``timeout`` seconds: all killed, test failed."""
    processes = []
    try:
        for (argv, env), log in zip(commands, logs):
            with open(log, "w", encoding="utf-8") as out:
                processes.append(subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + timeout
        for process in processes:
            process.wait(timeout=max(deadline - time.monotonic(), 1))
        return [p.returncode for p in processes]
    except subprocess.TimeoutExpired:
        pytest.fail(f"workers still running after {timeout} s:\n{tails(logs)}")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def tails(logs, lines=25):
    """The last ``lines`` lines of each log, for failure messages."""
    parts = []
    for log in logs:
        with open(log, encoding="utf-8", errors="replace") as handle:
            parts.append(f"--- {log}\n" + "".join(handle.readlines()[-lines:]))
    return "\n".join(parts)


def assert_ok(codes, logs, expected=0):
    assert codes == [expected] * len(codes), f"exit codes {codes}\n{tails(logs)}"


def load(path):
    with np.load(path) as arrays:
        return {k: arrays[k] for k in arrays.files}


# ------------------------------------------------------------------------------ model.fit


def test_two_workers_train_as_one_process_on_the_global_batch(tmp_path):
    ports = free_ports(2)
    script = os.path.join(HERE, "multi_worker_fit.py")
    commands = [([sys.executable, script, "worker", str(tmp_path)], child_env(TF_CONFIG=tf_config(ports, i)))
                for i in range(2)]
    commands.append(([sys.executable, script, "single", str(tmp_path)], child_env()))  # the references
    logs = [str(tmp_path / f"{name}.log") for name in ("worker0", "worker1", "single")]
    assert_ok(run_processes(commands, logs), logs)

    workers = [load(tmp_path / f"weights-worker{i}.npz") for i in range(2)]
    single, initial = load(tmp_path / "weights-single.npz"), load(tmp_path / "initial-single.npz")
    assert sorted(workers[0]) == sorted(single) and len(single) > 40
    for name in single:
        np.testing.assert_array_equal(workers[1][name], workers[0][name], err_msg=name)  # mirrored exactly
        np.testing.assert_allclose(workers[0][name], single[name], rtol=0, atol=1e-5, err_msg=name)
    # The steps changed the weights far more than the tolerance (equality is not vacuous).
    moved = max(float(np.max(np.abs(single[k] - initial[k]))) for k in single if single[k].size)
    assert moved > 1e-3

    # Clipped gradients: the clip acts on the sum over replicas, as in one process.
    mirrored, clipped = load(tmp_path / "weights-mirrored.npz"), load(tmp_path / "weights-clipped-single.npz")
    for name in single:
        np.testing.assert_allclose(mirrored[name], clipped[name], rtol=0, atol=1e-5, err_msg=name)
    assert max(float(np.max(np.abs(clipped[k] - single[k]))) for k in single if single[k].size) > 1e-3

    reports = [json.loads((tmp_path / f"report-worker{i}.json").read_text()) for i in range(2)]
    backup = tmp_path / "backup"
    assert reports[0]["write_dir"] == str(backup) and reports[0]["write_dir_exists"]
    assert reports[1]["write_dir"] != str(backup) and not reports[1]["write_dir_exists"]
    assert sorted(os.listdir(backup)) == ["latest.weights.h5", "training_metadata.json"]
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 1
    for i in range(2):
        assert reports[i]["restored_epochs_run"] == 0
        restored = load(tmp_path / f"restored-worker{i}.npz")
        for name in single:
            np.testing.assert_array_equal(restored[name], workers[0][name], err_msg=name)


# ------------------------------------------------------------------------------ rcnn-zoo train


def write_voc_shapes(root, count, size=64):
    """A VOC folder (``images/*.png``, ``annotations/*.xml``, ``train.txt``) of ``count``
    synthetic ``size``×``size`` pictures; returns ``root``."""
    from PIL import Image

    from rcnn_zoo.data.synthetic import CLASS_NAMES, generate_shapes

    images, boxes, labels = generate_shapes(count, image_size=(size, size), min_shapes=1, max_shapes=2,
                                            min_size=16, max_size=28, seed=1)
    os.makedirs(os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "annotations"))
    for i in range(count):
        Image.fromarray(images[i]).save(os.path.join(root, "images", f"shape{i}.png"))
        objects = "".join(  # VOC corners are 1-based and inclusive
            f"<object><name>{CLASS_NAMES[c]}</name><difficult>0</difficult><bndbox><xmin>{int(b[0]) + 1}</xmin>"
            f"<ymin>{int(b[1]) + 1}</ymin><xmax>{int(b[2])}</xmax><ymax>{int(b[3])}</ymax></bndbox></object>"
            for b, c in zip(boxes[i], labels[i]) if c >= 0)
        with open(os.path.join(root, "annotations", f"shape{i}.xml"), "w", encoding="utf-8") as handle:
            handle.write(f"<annotation><filename>shape{i}.png</filename><size><width>{size}</width>"
                         f"<height>{size}</height><depth>3</depth></size>{objects}</annotation>")
    with open(os.path.join(root, "train.txt"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(f"shape{i}" for i in range(count)) + "\n")
    return root


def launch_cli(tmp_path, name, args, interrupt_epoch=None):
    """Both workers of ``rcnn-zoo ARGS`` (through ``multi_worker_cli.py``), each with its own
    TMPDIR; returns ``(exit codes, logs, tmpdirs)``."""
    ports = free_ports(2)
    commands, logs, tmpdirs = [], [], []
    for i in range(2):
        tmp = tmp_path / f"{name}-tmp{i}"
        tmp.mkdir()
        extra = dict(TF_CONFIG=tf_config(ports, i), TMPDIR=str(tmp))
        if interrupt_epoch is not None:
            extra.update(RCNN_ZOO_TEST_INTERRUPT_EPOCH=str(interrupt_epoch),
                         RCNN_ZOO_TEST_REPORT=str(tmp_path / f"{name}-report{i}.json"))
        commands.append(([sys.executable, os.path.join(HERE, "multi_worker_cli.py"), *args], child_env(**extra)))
        logs.append(str(tmp_path / f"{name}-worker{i}.log"))
        tmpdirs.append(tmp)
    return run_processes(commands, logs), logs, tmpdirs


def own_folders(tmpdir):
    """The temporary folders a worker made for its files (``rcnn_zoo-<task>-…``)."""
    return [n for n in os.listdir(tmpdir) if n.startswith("rcnn_zoo-")]


def test_cli_multi_worker_chief_writes_and_an_interrupted_run_resumes(tmp_path):
    data = write_voc_shapes(str(tmp_path / "voc"), 2)
    out = tmp_path / "run"
    args = ["train", "--data", data, "--backbone", "tiny", "--image-min-size", "64", "--image-max-size", "64",
            "--batch-size", "2", "--epochs", "2", "--optimizer", "sgd", "--lr", "0.01", "--verbose", "2",
            "--val-split", "train", "--distribute", "multi-worker", "--output-dir", str(out)]

    codes, logs, tmpdirs = launch_cli(tmp_path, "first", args, interrupt_epoch=1)
    assert_ok(codes, logs, expected=130)  # KeyboardInterrupt: "run the same command again to resume"
    assert "global batch 2 on 2 replicas (1 image(s) each)" in tails(logs[:1], lines=200)
    assert sorted(os.listdir(out)) == ["backup", "best.keras", "config.json", "history.csv", "last.keras",
                                       "training_curves.png"]
    assert os.listdir(out / "backup") == ["progress.json"]
    assert json.loads((out / "backup" / "progress.json").read_text()) == {"epoch": 1}
    reports = [json.loads((tmp_path / f"first-report{i}.json").read_text()) for i in range(2)]
    # At the interruption the chief had no folder of its own; worker 1 had written the same run
    # files into its temporary folder, which is gone now.
    assert reports[0]["own"] == {}
    (folder, files), = reports[1]["own"].items()
    assert folder.startswith("rcnn_zoo-worker1-") and {"last.keras", "history.csv", "backup"} <= set(files)
    assert [own_folders(t) for t in tmpdirs] == [[], []]

    codes, logs, tmpdirs = launch_cli(tmp_path, "again", args)  # the same command: it continues
    assert_ok(codes, logs)
    chief_log = tails(logs[:1], lines=200)
    assert "Resuming from the interrupted run (backup/progress.json, last.keras) at epoch 2 of 2" in chief_log
    assert "Epoch 1/2" not in chief_log
    assert sorted(os.listdir(out)) == ["best.keras", "config.json", "history.csv", "last.keras", "training_curves.png"]
    with open(out / "history.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["0", "1"]
    # Validation ran on the chief (on a copy of the model outside the strategy): a real mAP.
    assert all(0.0 <= float(row["val_mAP"]) <= 1.0 for row in rows)
    assert [own_folders(t) for t in tmpdirs] == [[], []]
    record = json.loads((out / "config.json").read_text())
    assert [(r["from_epoch"], r["to_epoch"]) for r in record["runs"]] == [(0, 1), (1, 2)]


# ------------------------------------------------------------------------------ TF_CONFIG errors


@pytest.mark.parametrize("value, message", [
    (None, "TF_CONFIG environment variable, which is not set"),
    ("{not json", "TF_CONFIG is not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', "TF_CONFIG has no 'cluster'"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}}', "TF_CONFIG has no 'task'"),
    ('{"cluster": {"worker": ["127.0.0.1"]}, "task": {"type": "worker", "index": 0}}', "is not host:port"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}', "task index 2"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}', "task type 'chief' is not a job"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 0}}', "job(s) ps"),
])
def test_malformed_tf_config_is_named(value, message):
    environ = {} if value is None else {"TF_CONFIG": value}
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_tf_config(environ)


def test_multi_worker_without_tf_config_stops_before_training(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UsageError, match="TF_CONFIG"):
        train(TrainConfig(data=str(tmp_path), distribute="multi-worker", output_dir=str(tmp_path / "run")))
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:x"]}, "task": {"type": "worker", "index": 0}}')
    assert main(["train", "--data", str(tmp_path), "--distribute", "multi-worker",
                 "--output-dir", str(tmp_path / "run")]) == 2
    assert "'127.0.0.1:x' is not host:port" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
