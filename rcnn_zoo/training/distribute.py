"""Training on several devices or machines with ``tf.distribute``: the strategy of
``rcnn-zoo train --distribute``, which process is the chief, where each worker writes, and how
the training batches are split.

Modes (:data:`DISTRIBUTE_MODES`): ``none`` (one process, as without this module), ``mirrored``
(``tf.distribute.MirroredStrategy``: the GPUs of one machine) and ``multi-worker``
(``tf.distribute.MultiWorkerMirroredStrategy``: one process per machine, the cluster read from
the ``TF_CONFIG`` environment variable, gradients all-reduced over gRPC). See
``docs/distributed.md``.

- The batch size is GLOBAL (as in Keras): each step trains on ``batch_size`` images in all,
  ``batch_size / num_replicas`` per replica. Every worker builds the same global batches (same
  seed, same data) and keeps its own part of each (:func:`shard_by_data`); incomplete batches
  are dropped (:func:`full_batches_only`) so that every replica gets as many images.
- Only the chief (task ``chief``, else ``worker`` 0) writes into the run folder; the others
  write the same files into a temporary folder of their own (:func:`write_dir`), removed when
  training ends: TF's pattern for multi-worker checkpoints, so every worker runs the same
  callbacks and nothing is written twice to shared storage.
- Every worker reads where to resume from the run folder (shared storage, or a copy at the
  same path on each machine); :func:`check_workers_agree` makes a mismatch an error instead of
  a hang or a silent divergence.
"""

import contextlib
import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from rcnn_zoo.errors import UsageError

__all__ = [
    "DISTRIBUTE_MODES",
    "MultiWorkerBackupAndRestore",
    "ReplicaLocalEvaluation",
    "check_global_batch",
    "check_workers_agree",
    "full_batches_only",
    "is_chief",
    "make_strategy",
    "read_tf_config",
    "remove_write_dir",
    "shard_by_data",
    "strategy_scope",
    "task_of",
    "write_dir",
]

DISTRIBUTE_MODES = ("none", "mirrored", "multi-worker")
# The jobs a MultiWorkerMirroredStrategy trains with ("ps" is ParameterServerStrategy's, and an
# "evaluator" does not train).
_TRAINING_JOBS = ("chief", "worker")
_EXAMPLE = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}\'')


# ------------------------------------------------------------------------------ TF_CONFIG


def read_tf_config(environ=None):
    """The ``TF_CONFIG`` of ``environ`` (default ``os.environ``) as a dict, checked: a JSON
    object with ``cluster`` (``chief``: at most one address, ``worker``: a list of
    ``host:port``) and ``task`` (``type`` one of those jobs, ``index`` within its list).

    Raises :class:`UsageError` naming what is missing or wrong.
    """
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "")
    if not text.strip():
        raise UsageError("--distribute multi-worker reads the cluster from the TF_CONFIG environment variable, "
                         f"which is not set; set it on every machine, e.g. {_EXAMPLE} (docs/distributed.md)")
    try:
        config = json.loads(text)
    except ValueError as error:
        raise UsageError(f"TF_CONFIG is not valid JSON ({error}); expected e.g. {_EXAMPLE}") from error
    if not isinstance(config, dict):
        raise UsageError(f"TF_CONFIG must be a JSON object with 'cluster' and 'task', got {type(config).__name__}")
    cluster = _check_cluster(config.get("cluster"))
    _check_task(config.get("task"), cluster)
    return config


def _check_cluster(cluster):
    """``cluster`` of TF_CONFIG: ``{job: [host:port, …]}`` with a chief or workers."""
    if not isinstance(cluster, dict) or not cluster:
        raise UsageError("TF_CONFIG has no 'cluster' (an object such as "
                         '{"worker": ["host1:12345", "host2:12345"]})')
    unknown = sorted(set(cluster) - set(_TRAINING_JOBS))
    if unknown:
        raise UsageError(f"TF_CONFIG cluster has job(s) {', '.join(unknown)}: --distribute multi-worker trains "
                         "with 'chief' and 'worker' tasks only (no parameter servers or evaluators)")
    if not any(cluster.get(job) for job in _TRAINING_JOBS):
        raise UsageError("TF_CONFIG cluster lists no 'worker' (nor 'chief') addresses")
    for job, addresses in cluster.items():
        if not isinstance(addresses, list):
            raise UsageError(f"TF_CONFIG cluster '{job}' must be a list of host:port strings, got {addresses!r}")
        for address in addresses:
            _check_address(job, address)
    if len(cluster.get("chief", [])) > 1:
        raise UsageError(f"TF_CONFIG cluster 'chief' has {len(cluster['chief'])} addresses; there is one chief")
    return cluster


def _check_address(job, address):
    host, sep, port = str(address).rpartition(":")
    if not isinstance(address, str) or not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"TF_CONFIG cluster '{job}' address {address!r} is not host:port (port 1-65535)")


def _check_task(task, cluster):
    """``task`` of TF_CONFIG: which entry of ``cluster`` this process is."""
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise UsageError("TF_CONFIG has no 'task' with 'type' and 'index' (which entry of the cluster this "
                         'machine is, e.g. {"type": "worker", "index": 0}); each machine sets its own')
    job, index = task["type"], task["index"]
    if job not in cluster:
        raise UsageError(f"TF_CONFIG task type {job!r} is not a job of the cluster ({', '.join(cluster)})")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[job]):
        raise UsageError(f"TF_CONFIG task index {index!r} is not an index of cluster '{job}' "
                         f"(0 to {len(cluster[job]) - 1})")


# ------------------------------------------------------------------------------ strategy


def make_strategy(mode):
    """The ``tf.distribute`` strategy of ``--distribute mode``, or None for ``none``.

    ``multi-worker`` checks ``TF_CONFIG`` first (:func:`read_tf_config`). It must be created
    before TensorFlow runs any operation (it configures the collective ops of the process).
    """
    if mode in (None, "none"):
        return None
    if mode == "mirrored":
        return tf.distribute.MirroredStrategy()
    if mode != "multi-worker":
        raise UsageError(f"--distribute must be one of {', '.join(DISTRIBUTE_MODES)}, got {mode!r}")
    read_tf_config()
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError) as error:
        raise UsageError(f"cannot start the multi-worker strategy: {str(error).splitlines()[0]} (it must be "
                         "created before TensorFlow runs anything in this process)") from error


def strategy_scope(strategy):
    """``strategy.scope()``, or a context that does nothing when ``strategy`` is None."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def task_of(strategy=None):
    """``(task type, task index)`` of this process in the cluster of ``strategy`` (default the
    current one), ``(None, None)`` outside a cluster."""
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return None, None
    return resolver.task_type, resolver.task_id


def is_chief(strategy=None):
    """Whether this process writes the run's files: task ``chief``, or ``worker`` 0 of a
    cluster without a chief, or any process outside a cluster."""
    job, index = task_of(strategy)
    if job is None or job == "chief":
        return True
    jobs = (strategy or tf.distribute.get_strategy()).cluster_resolver.cluster_spec().jobs
    return job == "worker" and index == 0 and "chief" not in jobs


def write_dir(path, strategy=None):
    """Where this process writes what belongs in folder ``path``: ``path`` itself on the chief,
    a new temporary folder on the other workers (remove it with :func:`remove_write_dir`)."""
    if is_chief(strategy):
        return path
    job, index = task_of(strategy)
    return tempfile.mkdtemp(prefix=f"rcnn_zoo-{job}{index}-")


def remove_write_dir(folder, path):
    """Remove ``folder`` when :func:`write_dir` made it for ``path`` (never the run folder)."""
    if os.path.abspath(folder) != os.path.abspath(path):
        shutil.rmtree(folder, ignore_errors=True)


def check_global_batch(batch_size, strategy):
    """Refuse a global ``batch_size`` that the replicas of ``strategy`` cannot share equally
    (each replica's loss is normalised over its own images, so equal shares keep the summed
    gradient that of the global batch)."""
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    if batch_size % replicas:
        raise UsageError(f"--batch-size is the global batch: {batch_size} images cannot be shared equally by "
                         f"{replicas} replicas; use a multiple of {replicas}")


def check_workers_agree(strategy, facts):
    """Raise :class:`UsageError` unless every worker of ``strategy`` has the same ``facts``
    (``{name: int}``, the same names everywhere); a worker that cannot start passes
    ``{"ready": 0}`` plus -1 for the rest. Nothing to check with one worker.

    A collective: every worker must call it, in the same order.
    """
    job, _ = task_of(strategy)
    if job is None:
        return
    names = sorted(facts)
    table = _gather_from_workers(strategy, [int(facts[name]) for name in names])
    if (table == table[0]).all():
        return
    rows = "; ".join(f"replica {i}: " + ", ".join(f"{n}={v}" for n, v in zip(names, row))
                     for i, row in enumerate(table.tolist()))
    if "ready" in facts and (table[:, names.index("ready")] == 0).any():
        raise UsageError(f"a worker could not start training (see its own error); {rows}")
    raise UsageError(f"the workers disagree about the run ({rows}): every worker must read the same data and the "
                     "same --output-dir (shared storage, or a copy of the chief's at the same path on each machine)")


def _gather_from_workers(strategy, values):
    """``[replicas, len(values)]`` int64: ``values`` of every replica (all-gathered)."""
    local = tf.constant([values], tf.int64)

    @tf.function
    def gather():
        return strategy.run(lambda: tf.distribute.get_replica_context().all_gather(local, axis=0))

    return np.asarray(strategy.experimental_local_results(gather())[0])


# ------------------------------------------------------------------------------ data


def shard_by_data(dataset):
    """``dataset`` with ``AutoShardPolicy.DATA``: across workers, Keras'
    ``experimental_distribute_dataset`` splits each GLOBAL batch into one piece per replica and
    each worker keeps its own pieces. So every worker must produce the same batches in the same
    order (the same seed); it reads and augments the whole batch and drops the others' part.
    (rcnn_zoo's pipelines start from ``Dataset.range`` over records, not from files, so there
    is nothing for the FILE policy to shard.)"""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def full_batches_only(dataset, batch_size, count):
    """The batches of ``dataset`` that hold ``batch_size`` images, declared as ``count`` of them.

    A smaller batch (the end of an epoch or of an orientation group) would give some replicas
    fewer images than others, or none: its per-replica losses would no longer average to the
    global batch's, and a replica without images would compute batch-norm statistics of
    nothing. The shuffle changes each epoch, so the images dropped differ from epoch to epoch.
    """
    def full(inputs, targets):
        return tf.equal(tf.shape(tf.nest.flatten(inputs)[0])[0], batch_size)

    return dataset.filter(full).apply(tf.data.experimental.assert_cardinality(count))


# ------------------------------------------------------------------------------ callbacks


class ReplicaLocalEvaluation(keras.callbacks.Callback):
    """Run callback ``evaluation`` (e.g. a
    :class:`~rcnn_zoo.evaluation.MeanAveragePrecisionCallback`) on the chief only, with a copy of
    the model made outside the strategy.

    A distributed model's ``predict_on_batch`` runs the batch on every replica and concatenates
    the results across replicas and workers (N copies of each image's detections), and it is a
    collective that every worker would have to join. The copy predicts on this process alone;
    its weights are the model's, copied at every epoch's end. The other workers skip it (and
    wait for the chief at the next step).
    """

    def __init__(self, evaluation, chief=True):
        super().__init__()
        self.evaluation, self.chief = evaluation, chief
        self.copy = None

    def _local_copy(self):
        """The copy (made at the first call) with the model's current weights."""
        if self.copy is None:
            if tf.distribute.has_strategy():
                raise RuntimeError("ReplicaLocalEvaluation copies the model outside any strategy: call fit "
                                   "outside strategy.scope()")
            self.copy = self.model.__class__.from_config(self.model.get_config())
        self.copy.set_weights(self.model.get_weights())  # this replica's values: no collective
        return self.copy

    def on_epoch_end(self, epoch, logs=None):
        if self.chief:
            self.evaluation.set_model(self._local_copy())
            self.evaluation.on_epoch_end(epoch, logs)


class MultiWorkerBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``keras.callbacks.BackupAndRestore`` for several workers: every worker restores from
    ``backup_dir`` (shared storage, or the chief's backup copied to the same path on each
    machine), only the chief writes there, the others write into a temporary folder of their
    own, removed when training ends (TF's multi-worker checkpoint pattern). Restoring checks
    that every worker resumes at the same epoch (:func:`check_workers_agree`).

    Keras' own callback writes from every worker into the same ``backup_dir`` (one file
    clobbering another on shared storage). Arguments as ``BackupAndRestore``; the strategy is
    the model's (the one it was built under).
    """

    def __init__(self, backup_dir, **kwargs):
        super().__init__(backup_dir, **kwargs)
        self.read_dir = backup_dir
        self._read_paths = (self._weights_path, self._training_metadata_path)

    def _write_into(self, folder):
        """Write the backup (and its ``.bkp`` copies) into ``folder``."""
        self.backup_dir = folder
        self._weights_path = os.path.join(folder, "latest.weights.h5")
        self._training_metadata_path = os.path.join(folder, "training_metadata.json")
        self._prev_weights_path = f"{self._weights_path}.bkp"
        self._prev_training_metadata_path = f"{self._training_metadata_path}.bkp"

    def on_train_begin(self, logs=None):
        self._write_into(write_dir(self.read_dir, self.model.distribute_strategy))
        super().on_train_begin(logs)

    def _load_model(self):
        """Restore from ``read_dir`` (the chief's backup), on every worker."""
        weights, metadata = self._read_paths
        if os.path.exists(weights):
            if self.model.optimizer is not None and not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)
            self.model.load_weights(weights)
        epoch = 0
        if os.path.exists(metadata):
            with open(metadata, encoding="utf-8") as handle:
                epoch = int(json.load(handle)["epoch"])
            self.model._initial_epoch = epoch
        check_workers_agree(self.model.distribute_strategy, {"backup_epoch": epoch})

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        remove_write_dir(self.backup_dir, self.read_dir)
