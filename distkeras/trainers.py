"""Trainers: pyspark.ml Estimators that train a Keras model on a DataFrame with Spark workers.

Every trainer is the same machinery (``distkeras.driver.fit``) with a different algorithm
(``distkeras.algorithms``): a worker rule and a server rule. ``fit`` returns a
:class:`distkeras.model.KerasModel` (a Spark ML Model) with ``.keras_model`` and ``.history``.

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
from types import SimpleNamespace
from typing import Any

from pyspark.ml import Estimator
from pyspark.ml.param import Param
from pyspark.ml.util import MLReadable, MLWritable

from distkeras import algorithms
from distkeras import params as trainer_params


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

    rule: type[algorithms.Algorithm] = algorithms.Averaging   # the trainer's update rule
    # the workers' optimizer when neither worker_optimizer= nor the model's compile names one
    default_optimizer: Any = "adam"
    defaults: dict[str, Any] = {}     # a trainer's own defaults for the common Params
    fixed: dict[str, Any] = {}        # Params a trainer does not let a user change
    _rule_params: tuple[str, ...] = ()        # Params declared from the rule's signature
    _rule_defaults: dict[str, Any] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _declare_rule_params(cls)

    def __init__(self, keras_model=None, **params: Any):
        super().__init__()
        self.keras_model = keras_model
        self.coordinator = None   # the run's live coordinator while fit() runs (stats, tests)
        self._setDefault(**{s.name: s.default for s in trainer_params.SETTINGS})
        self._setDefault(**self._rule_defaults)
        self._setDefault(**{**self.defaults, **self.fixed})
        self.setParams(**params)

    def setParams(self, **params: Any) -> "Trainer":
        """Set Params by keyword; a rule's parameters go to ``algorithm_params`` when
        ``algorithm=`` names a rule other than the trainer's own."""
        for key, value in self.fixed.items():
            if key in params and params[key] != value:
                raise ValueError(f"{type(self).__name__} has {key}={value!r}; it cannot be "
                                 f"{params[key]!r}")
        rule = params.get("algorithm", self.getOrDefault("algorithm"))
        rule_class = type(rule) if isinstance(rule, algorithms.Algorithm) else rule
        extra_allowed = (set(trainer_params.rule_parameters(rule_class))
                         if isinstance(rule_class, type) else set())
        kept = {} if "algorithm" in params else self.getOrDefault("algorithm_params")
        extra = {**kept, **(params.pop("algorithm_params", None) or {})}
        for key, value in params.items():
            if self.hasParam(key) and (key in trainer_params.NAMES or key in self._rule_params):
                self._set(**{key: value})
            elif key in extra_allowed:
                extra[key] = value
            else:
                raise trainer_params.unknown_keyword(
                    f"{type(self).__name__}()", key,
                    set(trainer_params.NAMES) | set(self._rule_params) | extra_allowed)
        if extra:
            unknown = [k for k in extra if k not in extra_allowed]
            if unknown:
                name = getattr(rule_class, "__name__", rule_class)
                raise trainer_params.unknown_keyword(f"the {name} rule", unknown[0],
                                                     extra_allowed)
            self._set(algorithm_params=extra)
        try:                # a rule's own check (an unknown topology, a bad base) fails now
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
        (``learning_rate_scaling``; 'auto': the rule's own)."""
        scaling = self.getOrDefault("learning_rate_scaling")
        if scaling == "auto":
            rule = self.getOrDefault("algorithm") or self.rule
            scaling = getattr(rule, "learning_rate_scaling", None) or "none"
        workers = self.getOrDefault("num_workers")
        return {"none": 1.0, "linear": float(workers), "sqrt": float(workers) ** 0.5}[scaling]

    def make_algorithm(self, learning_rate: float) -> algorithms.Algorithm:
        """The run's algorithm: the trainer's rule with its Params, or a copy of the instance
        given as ``algorithm=`` with the trainer's workers, λ and learning rate."""
        rule = self.getOrDefault("algorithm") or self.rule
        window = self.getOrDefault("communication_window")
        workers = self.getOrDefault("num_workers")
        if isinstance(rule, algorithms.Algorithm):
            rule = copy.deepcopy(rule)
            rule.num_workers, rule.learning_rate = workers, float(learning_rate)
            if window is not None:
                rule.communication_window = window
            return rule
        if not (isinstance(rule, type) and issubclass(rule, algorithms.Algorithm)):
            raise TypeError(f"algorithm={rule!r}: give an Algorithm subclass or instance")
        params = {name: self.getOrDefault(name) for name in self._rule_params
                  if self.isSet(name)}
        if rule is not self.rule:
            accepted = trainer_params.rule_parameters(rule)
            for name in params:
                if name not in accepted:
                    raise trainer_params.unknown_keyword(f"the {rule.__name__} rule", name,
                                                         set(accepted))
        params.update(self.getOrDefault("algorithm_params"))
        return rule(communication_window=window, learning_rate=learning_rate,
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


def _declare_rule_params(cls: type) -> None:
    """The trainer's Params: the common ones (declared on :class:`Trainer`) and one per
    parameter of its rule's ``__init__``, with get/set methods."""
    defaults = {}
    for name, parameter in trainer_params.rule_parameters(cls.rule).items():
        if name in trainer_params.NAMES:
            continue
        default = None if parameter.default is inspect.Parameter.empty else parameter.default
        if not isinstance(cls.__dict__.get(name), Param):
            setattr(cls, name, trainer_params.make_param(
                name, f"parameter of the {cls.rule.__name__} rule (see "
                f"distkeras.algorithms.{cls.rule.__name__}); unset: the rule's default"))
        trainer_params.add_accessors(cls, name)
        defaults[name] = default
    cls._rule_params, cls._rule_defaults = tuple(defaults), defaults


for _setting in trainer_params.SETTINGS:
    setattr(Trainer, _setting.name, trainer_params.make_param(_setting.name, _setting.doc,
                                                              _setting.converter))
    trainer_params.add_accessors(Trainer, _setting.name)


def clone_keras_model(model, custom_objects: dict | None = None):
    """A new Keras model with ``model``'s architecture, all its state (weights, statistics,
    adapted preprocessing) and compile settings (a fresh optimizer)."""
    from distkeras.portable import PortableModel

    portable = PortableModel.of(model, custom_objects, check=False)
    clone = portable.build()
    if getattr(model, "compiled", False):
        config = model.get_compile_config()
        if config.get("loss") is not None:
            portable.compile(clone, config["loss"], config.get("optimizer"),
                             config.get("metrics"), config.get("loss_weights"))
    return clone


def _copy_callback(callback):
    """A callback for another copy of the trainer: its own state, no model attached."""
    memo = {}
    model = getattr(callback, "_model", None)
    if model is not None:
        memo[id(model)] = None
    return copy.deepcopy(callback, memo)


class SingleTrainer(Trainer):
    """One worker on all the data: the baseline every distributed trainer is measured against."""

    rule = algorithms.Averaging
    fixed = {"num_workers": 1}


class AveragingTrainer(Trainer):
    """Model averaging once per epoch, or every λ steps when ``communication_window`` is set."""

    rule = algorithms.Averaging


class LocalSGD(AveragingTrainer):
    """LocalSGD (Lin et al. 2018): average the replicas every λ local steps (default 12)."""

    defaults = {"communication_window": 12}


class EnsembleTrainer(Trainer):
    """``num_workers`` independent models, one per partition; predictions are averaged."""

    rule = algorithms.Ensemble


class DOWNPOUR(Trainer):
    """Asynchronous DOWNPOUR SGD (Dean et al. 2012): commit Δ every λ=5 steps, pull θ̃."""

    rule = algorithms.DOWNPOUR


class Hogwild(Trainer):
    """DOWNPOUR with lock-free commits on the server."""

    rule = algorithms.Hogwild


class AGN(Trainer):
    """Accumulated gradient normalisation (Hermans 2017): commit Δ/λ, λ=12 by default."""

    rule = algorithms.AGN


class ADAG(Trainer):
    """Asynchronous distributed adaptive gradients (Hermans 2017): AGN with per-weight
    staleness-scaled server updates; the recommended asynchronous default."""

    rule = algorithms.ADAG


class DynSGD(Trainer):
    """Staleness-aware DynSGD (Jiang et al. 2017): commits scaled by 1/(τ+1)."""

    rule = algorithms.DynSGD


class EASGD(Trainer):
    """Synchronous elastic averaging SGD (Zhang et al. 2015), λ=12; ``alpha`` optional."""

    rule = algorithms.EASGD


class AEASGD(Trainer):
    """Asynchronous EASGD, λ=32, elastic force α = 0.9/n whatever the workers' optimizer
    (``alpha=``, or ``rho=`` for the paper's α = ρη)."""

    rule = algorithms.AEASGD


class EAMSGD(AEASGD):
    """AEASGD whose workers use SGD with Nesterov momentum 0.9 (η=0.05) by default."""

    rule = algorithms.EAMSGD
    default_optimizer = {"class_name": "SGD", "config": {"learning_rate": 0.05, "momentum": 0.9,
                                                          "nesterov": True}}


class ARSGD(Trainer):
    """All-reduce SGD: every step the workers' gradients are averaged with a ring all-reduce
    and every replica takes the same optimizer step (the synchronous large-batch baseline).

    Example::

        ARSGD(model, loss="categorical_crossentropy", num_workers=4, batch_size=128).fit(df)
    """

    rule = algorithms.ARSGD


class DPSGD(Trainer):
    """D-PSGD (Lian et al. 2017): after every λ=1 local steps, average with the neighbours of a
    ``topology`` (``ring`` default, ``torus``, ``exponential``, ``complete``); synchronous.

    Example::

        DPSGD(model, topology="ring", num_workers=4).fit(df)
    """

    rule = algorithms.DPSGD


class ADPSGD(Trainer):
    """AD-PSGD (Lian et al. 2018): asynchronous, wait-free pairwise averaging with a random
    neighbour after every λ=1 local steps, overlapped with the next steps.

    Example::

        ADPSGD(model, num_workers=4).fit(df)
    """

    rule = algorithms.ADPSGD


class SwarmSGD(Trainer):
    """SwarmSGD (Nadiradze et al. 2019): ``local_steps`` H (fixed, or geometric with mean H when
    ``geometric=True``) between averagings with one random neighbour.

    Example::

        SwarmSGD(model, local_steps=3, num_workers=4).fit(df)
    """

    rule = algorithms.SwarmSGD


class SlowMo(Trainer):
    """SlowMo (Wang et al. 2019) on a ``base`` (``localsgd``, ``dpsgd``, ``adpsgd``,
    ``swarmsgd``): every ``slow_period`` τ=12 steps, u ← βu + (x_start − x)/γ and
    x ← x_start − αγu, after an exact average (``average=True``) or without (``False``).

    Example::

        SlowMo(model, base="adpsgd", slow_momentum=0.7, slow_period=12, average=False).fit(df)
    """

    rule = algorithms.SlowMo


__all__ = ["Trainer", "SingleTrainer", "AveragingTrainer", "LocalSGD", "EnsembleTrainer",
           "DOWNPOUR", "Hogwild", "AGN", "ADAG", "DynSGD", "EASGD", "AEASGD", "EAMSGD",
           "ARSGD", "DPSGD", "ADPSGD", "SwarmSGD", "SlowMo"]
