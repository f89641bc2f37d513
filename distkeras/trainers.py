"""Trainers: pyspark.ml Estimators that train a Keras model on a DataFrame with Spark workers.

Every trainer is the same machinery (``distkeras.driver.fit``) with a different algorithm
(``distkeras.algorithms``): a worker rule and a server rule. ``fit`` returns a
:class:`distkeras.model.KerasModel` (a Spark ML Model) with ``.keras_model`` and ``.history``.

Example::

    trainer = ADAG(model, loss="categorical_crossentropy", worker_optimizer="adam",
                   num_workers=2, batch_size=128, communication_window=12, num_epoch=5,
                   features_col="features", label_col="label")
    fitted = trainer.fit(train_df, validation_data=test_df)
    scored = fitted.transform(test_df)
"""
from __future__ import annotations

from typing import Any, Sequence

from pyspark.ml import Estimator

from distkeras import algorithms


class Trainer(Estimator):
    """Base of all trainers. Hyperparameters are plain constructor arguments.

    Args:
        keras_model: a built Keras 3 model (functional, Sequential with an input, or subclass).
        loss: Keras loss (name or object); defaults to the model's compiled loss.
        worker_optimizer: optimizer of each replica (name, instance or config dict).
        learning_rate: sets the worker optimizer's learning rate (η in the update rules).
        metrics: Keras metrics reported per epoch.
        num_workers: Spark tasks = model replicas = partitions.
        batch_size: per-worker mini-batch size.
        num_epoch: passes over each worker's partition.
        communication_window: λ, local steps between exchanges (None: the algorithm default).
        features_col: a column, or a list of columns (one per model input, or concatenated into
            the single input); columns are numbers, arrays of numbers or Spark ML vectors.
        label_col: integer class index (one-hot made when the loss needs it) or an array column.
        input_shapes: per-input target shape overriding the model's, e.g. ``[(801, 19)]``.
        ps_host / ps_port: where executors reach the driver (default ``spark.driver.host``, an
            ephemeral port); ``ps_bind_host`` the address the server listens on (default
            ``ps_host``; e.g. ``"0.0.0.0"`` behind NAT).
        tls_cert / tls_key: PEM files on the driver; when given, all parameter-server traffic is
            TLS and executors pin this certificate.
        data_feed: ``"memory"`` (each worker keeps its partition in numpy), ``"stream"`` (the
            data is staged as Parquet and every epoch streams it row group by row group with
            pyarrow: for data larger than executor memory) or ``"petastorm"`` (the same with
            petastorm's reader; pyspark 3.5 stack).
        staging_dir: where ``stream``/``petastorm`` stage the Parquet files; every executor must
            read it (HDFS, EOS, NFS; a local temp dir is fine for local masters).
        callbacks: Keras callbacks run on the driver at epoch ends (EarlyStopping, ModelCheckpoint).
            ``keras.callbacks.BackupAndRestore(backup_dir)`` sets ``checkpoint_dir``.
        checkpoint_dir: where the driver writes, at every epoch end, what the run needs to
            resume if the driver dies (θ̃, update count, epochs, history, the rule's server
            state); the same command run again resumes from the last completed epoch (the
            workers' optimizer state starts afresh). A local path or any Hadoop filesystem URI;
            cleared when the run completes.
        jit_compile: compile each communication window with XLA: ``"auto"`` (where the model
            supports it, on CPU and GPU alike; falls back without XLA if compilation fails),
            ``True`` or ``False``.
        verbose: show a progress bar on the driver.
        peer_host / peer_ports: for the algorithms whose workers talk to each other (AR-SGD,
            D-PSGD, AD-PSGD, SwarmSGD, SlowMo, LocalSGD over the ring): the address each worker's
            endpoint advertises (default ``SPARK_LOCAL_IP``, else the executor's address toward
            the driver) and an inclusive ``(first, last)`` port range to bind (default:
            ephemeral ports).
        algorithm: an :class:`~distkeras.algorithms.Algorithm` class or instance overriding the
            trainer's own (e.g. a rule subclassed in user code).
        algorithm_params: extra parameters of the update rule (``rho``, ``alpha``, ...).
    """

    algorithm: type[algorithms.Algorithm] = algorithms.Averaging
    def __init__(self, keras_model, loss: Any = None, worker_optimizer: Any = "adam",
                 learning_rate: float | None = None, metrics: Sequence[str] = ("accuracy",),
                 num_workers: int = 2, batch_size: int = 32, num_epoch: int = 1,
                 communication_window: int | None = None,
                 features_col: str | Sequence[str] = "features", label_col: str = "label",
                 prediction_col: str = "prediction", input_shapes=None, seed: int = 42,
                 ps_host: str | None = None, ps_port: int = 0, ps_bind_host: str | None = None,
                 tls_cert: str | None = None, tls_key: str | None = None,
                 connect_timeout: float = 30.0, round_timeout: float = 600.0,
                 data_feed: str = "memory", staging_dir: str | None = None,
                 callbacks: Sequence = (), jit_compile: bool | str = "auto",
                 verbose: bool = True, peer_host: str | None = None,
                 peer_ports: tuple[int, int] | None = None,
                 algorithm: type[algorithms.Algorithm] | algorithms.Algorithm | None = None,
                 checkpoint_dir: str | None = None, **algorithm_params):
        super().__init__()
        if algorithm is not None:
            self.algorithm = algorithm
        self.peer_host = peer_host
        self.peer_ports = tuple(peer_ports) if peer_ports else None
        self.keras_model = keras_model
        self.loss = loss
        self.worker_optimizer = worker_optimizer
        self.learning_rate = learning_rate
        self.metrics = list(metrics or [])
        self.num_workers = int(num_workers)
        self.batch_size = int(batch_size)
        self.num_epoch = int(num_epoch)
        self.communication_window = communication_window
        self.features_col = features_col
        self.label_col = label_col
        self.prediction_col = prediction_col
        self.input_shapes = input_shapes
        self.seed = int(seed)
        self.ps_host = ps_host
        self.ps_port = int(ps_port)
        self.ps_bind_host = ps_bind_host
        self.tls_cert, self.tls_key = tls_cert, tls_key
        self.connect_timeout = float(connect_timeout)
        self.round_timeout = float(round_timeout)
        if data_feed not in ("memory", "stream", "petastorm"):
            raise ValueError(f"data_feed={data_feed!r}: use 'memory', 'stream' or 'petastorm'")
        self.data_feed, self.staging_dir = data_feed, staging_dir
        self.callbacks = list(callbacks or [])
        self.checkpoint_dir = checkpoint_dir
        if jit_compile not in ("auto", True, False):
            raise ValueError(f"jit_compile={jit_compile!r}: use 'auto', True or False")
        self.jit_compile = jit_compile
        self.verbose = verbose
        self.algorithm_params = algorithm_params
        self.coordinator = None   # the run's live coordinator while fit() runs (stats, tests)
        if self.num_workers < 1 or self.batch_size < 1 or self.num_epoch < 1:
            raise ValueError("num_workers, batch_size and num_epoch must be positive")

    def make_algorithm(self, learning_rate: float) -> algorithms.Algorithm:
        """The run's algorithm: the trainer's class with its settings, or a copy of the
        instance given as ``algorithm=`` with the trainer's workers and learning rate."""
        if isinstance(self.algorithm, algorithms.Algorithm):
            import copy

            rule = copy.deepcopy(self.algorithm)
            rule.num_workers, rule.learning_rate = self.num_workers, float(learning_rate)
            if self.communication_window is not None:
                rule.communication_window = self.communication_window
            return rule
        return self.algorithm(communication_window=self.communication_window,
                              learning_rate=learning_rate, num_workers=self.num_workers,
                              **self.algorithm_params)

    def fit(self, dataset, params=None, *, validation_data=None, callbacks=None):
        """Train on ``dataset``; ``validation_data`` (DataFrame or ``(x, y)``) is evaluated on
        the centre variable after every epoch. Returns a :class:`~distkeras.model.KerasModel`."""
        trainer = self.copy(params) if params else self
        return trainer._fit(dataset, validation_data=validation_data, callbacks=callbacks)

    def _fit(self, dataset, validation_data=None, callbacks=None):
        from distkeras.driver.fit import run_training

        return run_training(self, dataset, validation_data,
                            list(self.callbacks) + list(callbacks or []))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_workers={self.num_workers}, batch_size="
                f"{self.batch_size}, num_epoch={self.num_epoch}, communication_window="
                f"{self.communication_window})")


class SingleTrainer(Trainer):
    """One worker on all the data: the baseline every distributed trainer is measured against."""

    algorithm = algorithms.Averaging

    def __init__(self, keras_model, **kwargs):
        kwargs["num_workers"] = 1
        super().__init__(keras_model, **kwargs)


class AveragingTrainer(Trainer):
    """Model averaging once per epoch, or every λ steps when ``communication_window`` is set."""

    algorithm = algorithms.Averaging


class LocalSGD(AveragingTrainer):
    """LocalSGD (Lin et al. 2018): average the replicas every λ local steps (default 12)."""

    def __init__(self, keras_model, communication_window: int = 12, **kwargs):
        super().__init__(keras_model, communication_window=communication_window, **kwargs)


class EnsembleTrainer(Trainer):
    """``num_workers`` independent models, one per partition; predictions are averaged."""

    algorithm = algorithms.Ensemble


class DOWNPOUR(Trainer):
    """Asynchronous DOWNPOUR SGD (Dean et al. 2012): commit Δ every λ=5 steps, pull θ̃."""

    algorithm = algorithms.DOWNPOUR


class Hogwild(Trainer):
    """DOWNPOUR with lock-free commits on the server."""

    algorithm = algorithms.Hogwild


class AGN(Trainer):
    """Accumulated gradient normalisation (Hermans 2017): commit Δ/λ, λ=12 by default."""

    algorithm = algorithms.AGN


class ADAG(Trainer):
    """Asynchronous distributed adaptive gradients (Hermans 2017): AGN with per-weight
    staleness-scaled server updates; the recommended asynchronous default."""

    algorithm = algorithms.ADAG


class DynSGD(Trainer):
    """Staleness-aware DynSGD (Jiang et al. 2017): commits scaled by 1/(τ+1)."""

    algorithm = algorithms.DynSGD


class EASGD(Trainer):
    """Synchronous elastic averaging SGD (Zhang et al. 2015), λ=12; ``alpha`` optional."""

    algorithm = algorithms.EASGD


class AEASGD(Trainer):
    """Asynchronous EASGD, λ=32, α=ρη with ``rho=5``; workers use plain SGD (η=0.1) by default."""

    algorithm = algorithms.AEASGD

    def __init__(self, keras_model, worker_optimizer="sgd", learning_rate=0.1, **kwargs):
        super().__init__(keras_model, worker_optimizer=worker_optimizer,
                         learning_rate=learning_rate, **kwargs)


class EAMSGD(AEASGD):
    """AEASGD with Nesterov momentum (``momentum=0.9``) in the workers' SGD."""

    algorithm = algorithms.EAMSGD

    def __init__(self, keras_model, momentum: float = 0.9, learning_rate=0.05, **kwargs):
        import keras

        kwargs.setdefault("worker_optimizer",
                          keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum,
                                               nesterov=True))
        super().__init__(keras_model, learning_rate=learning_rate, **kwargs)


class ARSGD(Trainer):
    """All-reduce SGD: every step the workers' gradients are averaged with a ring all-reduce
    and every replica takes the same optimizer step (the synchronous large-batch baseline).

    Example::

        ARSGD(model, loss="categorical_crossentropy", num_workers=4, batch_size=128).fit(df)
    """

    algorithm = algorithms.ARSGD


class DPSGD(Trainer):
    """D-PSGD (Lian et al. 2017): after every λ=1 local steps, average with the neighbours of a
    ``topology`` (``ring`` default, ``torus``, ``exponential``, ``complete``); synchronous.

    Example::

        DPSGD(model, topology="ring", num_workers=4).fit(df)
    """

    algorithm = algorithms.DPSGD


class ADPSGD(Trainer):
    """AD-PSGD (Lian et al. 2018): asynchronous, wait-free pairwise averaging with a random
    neighbour after every λ=1 local steps, overlapped with the next steps.

    Example::

        ADPSGD(model, num_workers=4).fit(df)
    """

    algorithm = algorithms.ADPSGD


class SwarmSGD(Trainer):
    """SwarmSGD (Nadiradze et al. 2019): ``local_steps`` H (fixed, or geometric with mean H when
    ``geometric=True``) between averagings with one random neighbour.

    Example::

        SwarmSGD(model, local_steps=3, num_workers=4).fit(df)
    """

    algorithm = algorithms.SwarmSGD


class SlowMo(Trainer):
    """SlowMo (Wang et al. 2019) on a ``base`` (``localsgd``, ``dpsgd``, ``adpsgd``,
    ``swarmsgd``): every ``slow_period`` τ=12 steps, u ← βu + (x_start − x)/γ and
    x ← x_start − αγu, after an exact average (``average=True``) or without (``False``).

    Example::

        SlowMo(model, base="adpsgd", slow_momentum=0.7, slow_period=12, average=False).fit(df)
    """

    algorithm = algorithms.SlowMo


__all__ = ["Trainer", "SingleTrainer", "AveragingTrainer", "LocalSGD", "EnsembleTrainer",
           "DOWNPOUR", "Hogwild", "AGN", "ADAG", "DynSGD", "EASGD", "AEASGD", "EAMSGD",
           "ARSGD", "DPSGD", "ADPSGD", "SwarmSGD", "SlowMo"]
