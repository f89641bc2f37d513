"""Trainers: pyspark.ml Estimators that train a Keras model on a DataFrame with Spark workers.

Every trainer is the same machinery (``distkeras.driver.fit``) with a different algorithm
(``distkeras.algorithms``): a worker rule and a server rule. The trainer classes are made from
the algorithms' registry (each rule lists the trainers it makes), so a new algorithm brings its
trainer with it. ``fit`` returns a :class:`distkeras.model.KerasModel` (a Spark ML Model) with
``.keras_model`` and ``.history``.

Example::

    trainer = ADAG(model, loss="categorical_crossentropy", worker_optimizer="adam",
                   num_workers=2, batch_size=128, communication_window=12, epochs=5,
                   features_col="features", label_col="label")
    fitted = trainer.fit(train_df, validation_data=test_df)
    scored = fitted.transform(test_df)
"""
from __future__ import annotations

import copy
import inspect
import logging
import warnings
from types import SimpleNamespace
from typing import Any

from pyspark.ml import Estimator
from pyspark.ml.param import Param
from pyspark.ml.util import MLReadable, MLWritable

from distkeras import algorithms
from distkeras import params as trainer_params

log = logging.getLogger(__name__)


class Trainer(Estimator, MLReadable, MLWritable):
    """Base of all trainers: a pyspark.ml Estimator whose hyperparameters are Params.

    ``Trainer(keras_model, **params)``: ``keras_model`` is a built Keras 3 model (functional,
    Sequential with an input, or a registered subclass); every keyword is a Param (see
    ``explainParams()`` and :mod:`distkeras.params`), the rule's own parameters included. An
    unknown keyword raises ``TypeError`` naming the closest valid one. ``fit(df, paramMap)``
    and ``fit(df, [paramMaps])`` work as for any pyspark.ml Estimator, so do ``CrossValidator``,
    ``TrainValidationSplit`` and ``Pipeline``; ``save``/``load`` write the Params and the model
    (a local path or any Hadoop URI).

    The Params most runs set: ``loss``, ``worker_optimizer``, ``learning_rate``, ``metrics``,
    ``num_workers``, ``batch_size``, ``epochs``, ``communication_window`` (λ),
    ``features_col``, ``label_col``, ``validation_data``, ``callbacks``, ``checkpoint_dir``.
    ``algorithm=`` takes an :class:`~distkeras.algorithms.Algorithm` class or instance that
    replaces the trainer's rule (e.g. one subclassed in user code); a class's own parameters
    are then keywords too.

    Example::

        trainer = Trainer(model, algorithm=MyRule, my_rate=0.5, num_workers=2, epochs=3)
        fitted = trainer.fit(df, {trainer.learning_rate: 0.003})
    """

    algorithm_class: type[algorithms.Algorithm] = algorithms.Averaging   # the trainer's algorithm
    key = "trainer"                   # its name on command lines and in studies
    # the workers' optimizer when neither worker_optimizer= nor the model's compile names one
    default_optimizer: Any = "adam"
    defaults: dict[str, Any] = {}     # a trainer's own defaults for the common Params
    fixed: dict[str, Any] = {}        # Params a trainer does not let a user change
    _algorithm_params: tuple[str, ...] = ()        # Params declared from the algorithm's signature
    _algorithm_defaults: dict[str, Any] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "rule" in cls.__dict__ and "algorithm_class" not in cls.__dict__:
            warnings.warn(f"{cls.__name__}.rule is deprecated; name the algorithm "
                          "algorithm_class", DeprecationWarning, stacklevel=2)
            cls.algorithm_class = cls.rule
        _declare_algorithm_params(cls)

    def __init__(self, keras_model=None, **params: Any):
        super().__init__()
        self.keras_model = keras_model
        self.coordinator = None   # the run's live coordinator while fit() runs (stats, tests)
        self._setDefault(**{s.name: s.default for s in trainer_params.SETTINGS})
        self._setDefault(**self._algorithm_defaults)
        self._setDefault(**{**self.defaults, **self.fixed})
        self.setParams(**params)

    def setParams(self, **params: Any) -> "Trainer":
        """Set Params by keyword; an algorithm's own parameters go to ``algorithm_params`` when
        ``algorithm=`` names another algorithm than the trainer's own."""
        for key, value in self.fixed.items():
            if key in params and params[key] != value:
                raise ValueError(f"{type(self).__name__} has {key}={value!r}; it cannot be "
                                 f"{params[key]!r}")
        algorithm = params.get("algorithm", self.getOrDefault("algorithm"))
        algorithm_type = (type(algorithm) if isinstance(algorithm, algorithms.Algorithm)
                          else algorithm)
        extra_allowed = (set(algorithms.parameters(algorithm_type))
                         if isinstance(algorithm_type, type) else set())
        kept = {} if "algorithm" in params else self.getOrDefault("algorithm_params")
        extra = {**kept, **(params.pop("algorithm_params", None) or {})}
        for key, value in params.items():
            if self.hasParam(key) and (key in trainer_params.NAMES
                                       or key in self._algorithm_params):
                self._set(**{key: value})
            elif key in extra_allowed:
                extra[key] = value
            else:
                raise trainer_params.unknown_keyword(
                    f"{type(self).__name__}()", key,
                    set(trainer_params.NAMES) | set(self._algorithm_params) | extra_allowed)
        if extra:
            unknown = [k for k in extra if k not in extra_allowed]
            if unknown:
                name = getattr(algorithm_type, "__name__", algorithm_type)
                raise trainer_params.unknown_keyword(f"the {name} algorithm", unknown[0],
                                                     extra_allowed)
            self._set(algorithm_params=extra)
        try:            # the algorithm's own checks (an unknown topology, a bad base) fail now
            self.make_algorithm(0.01)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{type(self).__name__}(): {exc}") from None
        return self

    # -- what a run reads ------------------------------------------------------------------------
    def settings(self) -> SimpleNamespace:
        """Every Param's current value (and the model) as attributes: what one run reads."""
        values = {p.name: self.getOrDefault(p) for p in self.params}
        values["callbacks"] = list(values["callbacks"])
        return SimpleNamespace(keras_model=self.keras_model, name=type(self).__name__, **values)

    def learning_rate_factor(self) -> float:
        """What the worker learning rate is multiplied by for this run's number of workers
        (``learning_rate_scaling``; 'auto': the algorithm's own)."""
        scaling = self.getOrDefault("learning_rate_scaling")
        if scaling == "auto":
            algorithm = self.getOrDefault("algorithm") or self.algorithm_class
            scaling = getattr(algorithm, "learning_rate_scaling", None) or "none"
        return algorithms.LEARNING_RATE_SCALINGS[scaling](self.getOrDefault("num_workers"))

    def make_algorithm(self, learning_rate: float, steps: int | None = None
                       ) -> algorithms.Algorithm:
        """The run's algorithm: the trainer's algorithm with its Params, or a copy of the instance
        given as ``algorithm=`` with the trainer's workers, λ and learning rate. With ``steps``
        (per epoch), the settings left at their defaults are fitted to the data
        (``Algorithm.fit_to``: at least 4 exchanges per epoch)."""
        algorithm = self._make_algorithm(learning_rate)
        if steps:
            unset = {p.name for p in self.params if not self.isSet(p)}
            for name, (was, now) in algorithm.fit_to(steps, unset).items():
                log.warning("%s=%s gives a worker fewer than %d exchanges in its %d steps per "
                            "epoch: this run uses %s=%s (set %s= to keep another)", name, was,
                            algorithms.EXCHANGES_PER_EPOCH, steps, name, now, name)
        return algorithm

    def _make_algorithm(self, learning_rate: float) -> algorithms.Algorithm:
        algorithm = self.getOrDefault("algorithm") or self.algorithm_class
        window = self.getOrDefault("communication_window")
        workers = self.getOrDefault("num_workers")
        if isinstance(algorithm, algorithms.Algorithm):
            # made again from its arguments, so that what derives from the workers and η in
            # __init__ (AEASGD's α = 0.9/n, say) follows the trainer's
            config = dict(algorithm.get_config(), num_workers=workers,
                          learning_rate=float(learning_rate))
            if window is not None:
                config["communication_window"] = window
            return type(algorithm)(**copy.deepcopy(config))
        if not (isinstance(algorithm, type) and issubclass(algorithm, algorithms.Algorithm)):
            raise TypeError(f"algorithm={algorithm!r}: give an Algorithm subclass or instance")
        params = {name: self.getOrDefault(name) for name in self._algorithm_params
                  if self.isSet(name)}
        if algorithm is not self.algorithm_class:
            accepted = algorithms.parameters(algorithm)
            for name in params:
                if name not in accepted:
                    raise trainer_params.unknown_keyword(
                        f"the {algorithm.__name__} algorithm", name, set(accepted))
        params.update(self.getOrDefault("algorithm_params"))
        return algorithm(communication_window=window, learning_rate=learning_rate,
                         num_workers=workers, **params)

    # -- pyspark.ml ------------------------------------------------------------------------------
    def fit(self, dataset, params=None, *, validation_data=None, callbacks=None):
        """Train on ``dataset``; ``validation_data`` (DataFrame or ``(x, y)``; also a Param) is
        evaluated on the run's model after every epoch, ``callbacks`` run on the driver with
        the ones set as a Param. ``params``: a param map (trains a copy of this trainer) or a
        list of them (one model each, as ``fitMultiple``). Returns a
        :class:`~distkeras.model.KerasModel` (a list of them for a list of maps)."""
        if isinstance(params, (list, tuple)):
            trainer = self
            if validation_data is not None or callbacks:
                trainer = self.copy({self.validation_data: validation_data}
                                    if validation_data is not None else {})
                if callbacks:
                    trainer._set(callbacks=trainer.getCallbacks() + list(callbacks))
            return Estimator.fit(trainer, dataset, list(params))
        trainer = self.copy(params) if params else self
        return trainer._fit(dataset, validation_data=validation_data, callbacks=callbacks)

    def _fit(self, dataset, validation_data=None, callbacks=None):
        from distkeras.driver.fit import run_training

        if self.keras_model is None:
            raise ValueError(f"{type(self).__name__} has no Keras model: pass it as the first "
                             "argument")
        if validation_data is None:
            validation_data = self.getOrDefault("validation_data")
        return run_training(self, dataset, validation_data,
                            list(self.getOrDefault("callbacks")) + list(callbacks or []))

    def copy(self, extra=None) -> "Trainer":
        """A copy with ``extra`` Params set. The copy owns its Keras model (a clone with the
        same weights and compile settings), its callbacks and its algorithm instance: fitting
        one copy never touches another (``CrossValidator`` fits copies side by side)."""
        that = super().copy(extra)
        that.coordinator = None
        if self.keras_model is not None:
            that.keras_model = clone_keras_model(self.keras_model, self.getOrDefault(
                "custom_objects"))
        if that.isSet(that.callbacks):
            that._set(callbacks=[_copy_callback(cb) for cb in that.getCallbacks()])
        if that.isSet(that.algorithm) and isinstance(that.getAlgorithm(), algorithms.Algorithm):
            that._set(algorithm=copy.deepcopy(that.getAlgorithm()))
        return that

    def write(self):
        from distkeras.persistence import TrainerWriter

        return TrainerWriter(self)

    @classmethod
    def read(cls):
        from distkeras.persistence import TrainerReader

        return TrainerReader(cls)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_workers={self.getNumWorkers()}, batch_size="
                f"{self.getBatchSize()}, epochs={self.getEpochs()}, communication_window="
                f"{self.getCommunicationWindow()})")


def _declare_algorithm_params(cls: type) -> None:
    """The trainer's Params: the common ones (declared on :class:`Trainer`) and one per
    parameter of its algorithm's ``__init__``, with get/set methods."""
    defaults = {}
    for name, parameter in algorithms.parameters(cls.algorithm_class).items():
        if name in trainer_params.NAMES:
            continue
        default = None if parameter.default is inspect.Parameter.empty else parameter.default
        if not isinstance(cls.__dict__.get(name), Param):
            setattr(cls, name, trainer_params.make_param(
                name, f"parameter of the {cls.algorithm_class.__name__} algorithm (see "
                f"distkeras.algorithms.{cls.algorithm_class.__name__}); unset: its default"))
        trainer_params.add_accessors(cls, name)
        defaults[name] = default
    cls._algorithm_params, cls._algorithm_defaults = tuple(defaults), defaults


for _setting in trainer_params.SETTINGS:
    setattr(Trainer, _setting.name, trainer_params.make_param(_setting.name, _setting.doc,
                                                              _setting.converter))
    trainer_params.add_accessors(Trainer, _setting.name)


def clone_keras_model(model, custom_objects: dict | None = None):
    """A new Keras model with ``model``'s architecture, all its state (weights, statistics,
    adapted preprocessing) and compile settings (a fresh optimizer). A model that would come
    back different (a ``get_config`` that forgets an argument) is refused, as ``fit`` refuses
    it: the clone is what a copied trainer trains."""
    from distkeras.portable import COMPILE_ARGUMENTS, PortableModel
    from distkeras.rebuild import verify_rebuild

    portable = PortableModel.of(model, custom_objects, check=False)
    clone = portable.build()
    verify_rebuild(model, clone)
    if getattr(model, "compiled", False):
        config = model.get_compile_config()
        if config.get("loss") is not None:
            portable.compile(clone, **{k: config.get(k) for k in COMPILE_ARGUMENTS})
    return clone


def _copy_callback(callback):
    """A callback for another copy of the trainer: its own state, no model attached."""
    memo = {}
    model = getattr(callback, "_model", None)
    if model is not None:
        memo[id(model)] = None
    return copy.deepcopy(callback, memo)


def trainer_class(algorithm: type[algorithms.Algorithm], spec: algorithms.TrainerSpec) -> type:
    """The Estimator class of one registered trainer (``distkeras.algorithms.registry``)."""
    return type(spec.name, (Trainer,), {
        "__doc__": spec.doc, "__module__": __name__, "__qualname__": spec.name,
        "algorithm_class": algorithm,
        "key": spec.key, "defaults": dict(spec.defaults), "fixed": dict(spec.fixed),
        "default_optimizer": spec.default_optimizer})


for _algorithm, _spec in algorithms.trainer_specs():
    globals()[_spec.name] = trainer_class(_algorithm, _spec)

__all__ = ["Trainer", *(spec.name for _, spec in algorithms.trainer_specs())]


def __getattr__(name: str):
    """A trainer registered after this module was imported (a algorithm defined by the user)."""
    for algorithm, spec in algorithms.trainer_specs():
        if spec.name == name:
            globals()[name] = cls = trainer_class(algorithm, spec)
            return cls
    raise AttributeError(f"module 'distkeras.trainers' has no attribute {name!r}")
