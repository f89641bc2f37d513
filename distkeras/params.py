"""The trainers' hyperparameters as pyspark.ml Params: one table, one vocabulary.

Every setting of every trainer is a :class:`pyspark.ml.param.Param` named exactly as its
constructor keyword (``num_workers``, ``batch_size``, ``epochs``, ``communication_window``,
``learning_rate``, ...), with a doc string, a type converter that checks the value, a default
and generated ``get``/``set`` methods (``getNumWorkers()``, ``setNumWorkers(4)``). An
algorithm's own parameters (``rho``, ``alpha``, ``topology``, ``local_steps``, ``slow_momentum``,
...) become Params of the trainer that uses it, read from its ``__init__`` signature, so
``ParamGridBuilder`` reaches them like any other. The same names are used by the tuning, pipeline
and study APIs.

Example::

    trainer = dk.trainers.ADAG(model, num_workers=2, epochs=5)
    print(trainer.explainParams())
    trainer.setCommunicationWindow(8).getCommunicationWindow()   # 8
    fitted = trainer.fit(df, {trainer.learning_rate: 3e-3})
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable

from pyspark.ml.param import Param, Params, TypeConverters

from distkeras.scaling import LEARNING_RATE_SCALINGS

# names a previous release used, with what replaced them
RENAMED = {"num_epoch": "epochs", "num_epochs": "epochs"}


def _optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else convert(value)


def _positive_int(value: Any) -> int:
    number = TypeConverters.toInt(value)
    if number < 1:
        raise TypeError(f"{value!r} is not a positive integer")
    return number


def _simulation(value: Any) -> str:
    """A ``simulate=`` text, checked (a bad network or field fails when the Param is set)."""
    from distkeras.simulation import Simulation

    if isinstance(value, Simulation):
        return value.spec
    text = TypeConverters.toString(value)
    try:
        Simulation.parse(text)
    except ValueError as exc:
        raise TypeError(str(exc)) from None
    return text


def _choice(*allowed: Any) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        for option in allowed:
            if value == option and type(value) is type(option):    # 1 is not True
                return option
        raise TypeError(f"{value!r} is not one of {', '.join(map(repr, allowed))}")
    return convert


def _columns(value: Any) -> str | list[str] | dict[str, str]:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):         # by output name: {"cls": "label", "big": "is_big"}
        return {str(k): TypeConverters.toString(v) for k, v in value.items()}
    return TypeConverters.toListString(value)


def _list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _compression(value: Any) -> str | None:
    from distkeras.compression import canonical

    try:
        return canonical(value)
    except ValueError as exc:
        raise TypeError(str(exc)) from None


def _port_range(value: Any) -> tuple[int, int]:
    first, last = (int(v) for v in value)
    if not 0 < first <= last < 65536:
        raise TypeError(f"{value!r} is not an inclusive (first, last) port range")
    return first, last


def _flag_or_name(value: Any) -> bool | str:
    if isinstance(value, (bool, str)):
        return value
    raise TypeError(f"{value!r} is neither True/False nor a name")


def _weights(value: Any) -> list[float] | dict[str, float]:
    if isinstance(value, dict):
        return {str(k): float(v) for k, v in value.items()}
    return [float(v) for v in value]


def _class_weight(value: Any) -> dict[int, float]:
    if not isinstance(value, dict):
        raise TypeError(f"{value!r} is not a dict of class index to weight")
    out = {int(k): float(v) for k, v in value.items()}
    if any(k < 0 or v < 0 for k, v in out.items()):
        raise TypeError(f"{value!r}: class indices and weights must be non-negative")
    return out


def _metrics(value: Any) -> list | dict:
    if isinstance(value, (str, dict)) and not (isinstance(value, dict) and "class_name" not in
                                               value):
        return [value]
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]      # a metric object


def _dict(value: Any) -> dict:
    if not isinstance(value, dict):
        raise TypeError(f"{value!r} is not a dict")
    return dict(value)


@dataclass(frozen=True)
class Setting:
    """One trainer hyperparameter: its Param's name, doc, converter and default."""

    name: str
    doc: str
    converter: Callable[[Any], Any]
    default: Any


_identity = TypeConverters.identity
SETTINGS: tuple[Setting, ...] = (
    Setting("loss", "Keras loss: a name, a loss object or its config dict, or a list / dict by "
            "output name of those (None: the model's compiled loss)", _identity, None),
    Setting("loss_weights", "weights of the outputs' losses, a list or a dict by output name "
            "(None: the model's compiled ones, else equal)", _optional(_weights), None),
    Setting("worker_optimizer", "optimizer of each replica: a name, a Keras optimizer or its "
            "config dict (None: the optimizer the model was compiled with, else Adam)",
            _identity, None),
    Setting("learning_rate", "sets the worker optimizer's learning rate η (None: the "
            "optimizer's own), as for one worker on all the data", _optional(TypeConverters.toFloat),
            None),
    Setting("learning_rate_scaling", "how η grows with num_workers n: 'linear' (η·n), 'sqrt' "
            "(η·√n), 'elastic' (η·(n+1)), 'none', or 'auto': the algorithm's own (linear where "
            "the run's model moves by the mean of the workers' progress, elastic where a centre "
            "variable is pulled along with them, none where their commits add up)",
            _choice("auto", *LEARNING_RATE_SCALINGS), "auto"),
    Setting("metrics", "Keras metrics reported per epoch: names or metric objects, a list or a "
            "dict by output name (None: the model's compiled metrics, else accuracy)",
            _optional(_metrics), None),
    Setting("num_workers", "Spark tasks = model replicas = partitions", _positive_int, 2),
    Setting("cores_per_worker", "CPU cores (TensorFlow threads) of each worker task; None: on a "
            "local master the cores shared among the workers, on a cluster spark.task.cpus. "
            "On a cluster a number is requested per task by stage-level scheduling",
            _optional(_positive_int), None),
    Setting("overlap_communication", "asynchronous parameter-server rules: the commit and pull "
            "of window k are in flight while window k+1 computes (one window more staleness). "
            "Helps where the network's latency, not the CPU, bounds a round trip; None: off (it "
            "measured slower on loopback)", _optional(TypeConverters.toBoolean), None),
    Setting("compression", "how exchanges travel: None (float32), 'fp16', 'bf16', 'int8' "
            "(per-chunk scale; 'int8:stochastic' unbiased), 'topk:<fraction>' (error "
            "feedback) or 'powersgd:<rank>' (ring all-reduce only); an algorithm whose "
            "exchange cannot take it refuses it before training (distkeras.compression)",
            _optional(_compression), None),
    Setting("batch_size", "per-worker mini-batch size", _positive_int, 32),
    Setting("epochs", "passes over each worker's partition", _positive_int, 1),
    Setting("communication_window", "λ, local steps between exchanges (None: the algorithm's "
            "default)", _optional(_positive_int), None),
    Setting("features_col", "a column, or a list of columns (one per model input, or "
            "concatenated into the single input): numbers, arrays of numbers or Spark ML "
            "vectors", _columns, "features"),
    Setting("label_col", "integer class index (one-hot made when the loss needs it) or an "
            "array column; for a model with several outputs a list of columns, one per output "
            "in the model's order, or a dict {output name: column} (required when the model "
            "returns its outputs as a dict)", _columns, "label"),
    Setting("weight_col", "a column of per-row sample weights (None: none), as Keras' "
            "fit(sample_weight=)", _optional(TypeConverters.toString), None),
    Setting("class_weight", "{class index: weight} for the label of a one-output model, as "
            "Keras' fit(class_weight=)", _optional(_class_weight), None),
    Setting("custom_objects", "{name: class or function} the model needs beyond the ones "
            "registered with keras.saving.register_keras_serializable (found by themselves); "
            "sent to the executors by value, as Keras' load_model(custom_objects=) takes them",
            _optional(_dict), None),
    Setting("prediction_col", "output column: the class index as a double for classifiers, "
            "the value for a one-output regression, else an array", TypeConverters.toString,
            "prediction"),
    Setting("probability_col", "output column of classifiers: class probabilities as a Spark "
            "ML vector", TypeConverters.toString, "probability"),
    Setting("raw_prediction_col", "output column of classifiers: the model's raw output as a "
            "Spark ML vector (logits with a from_logits loss, else the probabilities)",
            TypeConverters.toString, "rawPrediction"),
    Setting("input_shapes", "per-input target shape overriding the model's, e.g. "
            "[(801, 19)]", _identity, None),
    Setting("seed", "seed of the workers' shuffles and initialisation", TypeConverters.toInt, 42),
    Setting("ps_host", "where executors reach this process's services (None: spark.driver.host; "
            "on Spark Connect this process's address towards the server)",
            _optional(TypeConverters.toString), None),
    Setting("ps_port", "the parameter server's port (0: ephemeral)", TypeConverters.toInt, 0),
    Setting("services", "where the coordinator and parameter server run: 'here' (this Python "
            "process: Spark's driver, or the Spark Connect client) or 'task' (one more task of "
            "the training job, beside the workers: for a client the executors cannot reach)",
            _choice("here", "task"), "here"),
    Setting("ps_bind_host", "the address the driver's servers listen on (None: ps_host; "
            "e.g. 0.0.0.0 behind NAT)", _optional(TypeConverters.toString), None),
    Setting("tls_cert", "PEM certificate on the driver: all driver traffic is TLS and "
            "executors pin it", _optional(TypeConverters.toString), None),
    Setting("tls_key", "PEM key of tls_cert", _optional(TypeConverters.toString), None),
    Setting("connect_timeout", "seconds a worker tries to reach the driver or a peer",
            TypeConverters.toFloat, 30.0),
    Setting("round_timeout", "seconds a synchronous round waits for every worker",
            TypeConverters.toFloat, 600.0),
    Setting("data_feed", "'memory' (each worker keeps its partition in numpy), 'stream' "
            "(staged Parquet streamed with pyarrow every epoch) or 'petastorm'",
            _choice("memory", "stream", "petastorm"), "memory"),
    Setting("staging_dir", "where the streaming feeds stage Parquet; every executor must "
            "read it", _optional(TypeConverters.toString), None),
    Setting("validation_data", "a DataFrame or (x, y) evaluated on the run's model after "
            "every epoch (val_* logs)", _identity, None),
    Setting("callbacks", "Keras callbacks run on the driver at epoch ends", _list, []),
    Setting("checkpoint_dir", "where the driver writes what a run needs to resume after the "
            "driver died (local path or Hadoop URI); cleared when the run completes",
            _optional(TypeConverters.toString), None),
    Setting("jit_compile", "compile each communication window with XLA: 'auto' (where the "
            "model supports it), True or False", _choice("auto", True, False), "auto"),
    Setting("reuse_compiled", "each Python worker keeps its compiled replica after a fit and "
            "reuses it in the next fit of the same model (architecture, custom-object code, loss, "
            "optimizer, metrics, number of workers): only the compiled windows are kept, every "
            "value is the new fit's", TypeConverters.toBoolean, True),
    Setting("simulate", "train in virtual time instead of on the executors "
            "(distkeras.simulation): the real rule, exchanges and data split, the workers "
            "taking turns on one replica in this process, the network and compute time "
            "modelled, e.g. '10gbit:0.1ms' or 'network=1gbit:50us,step=2ms,stragglers="
            "lognormal:0.2' (None: train for real)", _optional(_simulation), None),
    Setting("verbose", "show a progress bar on the driver", TypeConverters.toBoolean, True),
    Setting("mlflow", "log the fit to MLflow: True (the active experiment), an experiment name, "
            "or False (see distkeras.tracking)", _flag_or_name, False),
    Setting("peer_host", "address each peer endpoint advertises (None: SPARK_LOCAL_IP, else "
            "the executor's address toward the driver)", _optional(TypeConverters.toString),
            None),
    Setting("peer_ports", "inclusive (first, last) port range for peer endpoints (None: "
            "ephemeral)", _optional(_port_range), None),
    Setting("algorithm", "an Algorithm class or instance overriding the trainer's own "
            "(e.g. one subclassed in user code)", _identity, None),
    Setting("algorithm_params", "parameters of an algorithm given as algorithm= (checked "
            "against its signature)", _dict, {}),
)
NAMES = frozenset(s.name for s in SETTINGS)
# not JSON: written by the persistence code in their own form, or not at all
OBJECT_VALUED = frozenset({"loss", "worker_optimizer", "validation_data", "callbacks",
                           "algorithm", "custom_objects", "metrics"})


def accessor_name(name: str) -> str:
    """``num_workers`` → ``NumWorkers`` (for ``getNumWorkers`` / ``setNumWorkers``)."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def make_param(name: str, doc: str, converter=_identity) -> Param:
    return Param(Params._dummy(), name, doc, converter)


def add_accessors(cls: type, name: str) -> None:
    """``getX``/``setX`` for Param ``name`` on ``cls`` (unless the class defines them)."""
    suffix = accessor_name(name)

    def getter(self):
        return self.getOrDefault(getattr(self, name))

    def setter(self, value):
        return self._set(**{name: value})

    getter.__doc__ = f"Gets the value of {name} or its default."
    setter.__doc__ = f"Sets the value of {name}."
    for prefix, function in (("get", getter), ("set", setter)):
        if f"{prefix}{suffix}" not in cls.__dict__:
            function.__name__ = f"{prefix}{suffix}"
            setattr(cls, f"{prefix}{suffix}", function)


def unknown_keyword(owner: str, key: str, valid: set[str]) -> TypeError:
    """The TypeError for a keyword no Param and no algorithm parameter takes, naming the
    closest."""
    if key in RENAMED:
        return TypeError(f"{owner}: {key!r} is now called {RENAMED[key]!r} (one name for "
                         f"every trainer, tuning and pipeline call): use {RENAMED[key]}=")
    close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid: {', '.join(sorted(valid))}"
    return TypeError(f"{owner} got an unexpected keyword argument {key!r}{hint}")
