"""What every replica is compiled with: the trainer's settings where given, else what the user
compiled the model with (as ``model.fit`` would use), else the trainer's defaults.

Everything here is JSON-able (Keras configs), so it travels to the executors and into saved
trainers as it is; custom losses and metrics travel as custom objects with the model
(``distkeras.portable``).

Example::

    compiled = CompileSettings.of(trainer.settings(), trainer.default_optimizer)
    compiled.loss, compiled.optimizer, compiled.learning_rate
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from distkeras.portable import (COMPILE_ARGUMENTS, deserialize, learning_rate_config,
                                serialize_structure)

DEFAULT_OPTIMIZER = "adam"
DEFAULT_LEARNING_RATE = 0.01      # for an optimizer config that does not say (a schedule)


@dataclass
class CompileSettings:
    loss: Any                       # a name, a Keras config, or a list / dict per output
    optimizer: dict                 # a Keras optimizer config
    metrics: Any                    # as Keras' compile takes them, serialised
    loss_weights: Any = None        # a list or a dict by output name
    learning_rate: float = DEFAULT_LEARNING_RATE     # what the workers run with
    factor: float = 1.0             # learning_rate = the single-worker rate × factor
    weighted_metrics: Any = None    # the model's compiled ones (weight_col, class_weight)

    def arguments(self) -> dict:
        """``compile``'s keyword arguments for a replica (JSON-able: they travel in the task).

        Example::

            portable.compile(model, **compiled.arguments())
        """
        return {name: getattr(self, name) for name in COMPILE_ARGUMENTS}

    @property
    def single_worker_rate(self) -> float:
        """The rate as given (or compiled), before it was scaled for the workers."""
        return self.learning_rate / self.factor

    @classmethod
    def of(cls, settings, default_optimizer: Any = DEFAULT_OPTIMIZER) -> "CompileSettings":
        """``settings``: the run's settings (``Trainer.settings()``)."""
        import keras

        model = settings.keras_model
        compiled = model.get_compile_config() if getattr(model, "compiled", False) else None
        compiled = compiled or {}
        loss = settings.loss if settings.loss is not None else compiled.get("loss")
        if loss is None:
            raise ValueError("no loss: pass loss= to the settings or compile the model first")
        optimizer = settings.worker_optimizer
        if optimizer is None:
            optimizer = compiled.get("optimizer") or default_optimizer
        config = keras.optimizers.serialize(_optimizer(optimizer))
        if settings.learning_rate is not None:
            learning_rate_config(config)["learning_rate"] = float(settings.learning_rate)
        lr = learning_rate_config(config).get("learning_rate")
        metrics = settings.metrics if settings.metrics is not None else compiled.get("metrics")
        if metrics is None:
            metrics = ["accuracy"] if len(getattr(model, "outputs", None) or [0]) == 1 else []
        loss_weights = (settings.loss_weights if settings.loss_weights is not None
                        else compiled.get("loss_weights"))
        if isinstance(lr, dict):       # a schedule: the rate it starts from, where it says
            lr = lr.get("config", {}).get("initial_learning_rate")
        weighted = compiled.get("weighted_metrics")
        return cls(serialize_structure(loss, keras.losses), config,
                   serialize_structure(metrics, keras.metrics), loss_weights,
                   float(lr) if isinstance(lr, (int, float)) else DEFAULT_LEARNING_RATE,
                   weighted_metrics=None if weighted is None else
                   serialize_structure(weighted, keras.metrics))

    @property
    def scheduled(self) -> bool:
        """Whether the workers' learning rate is a schedule (which no factor scales)."""
        return isinstance(learning_rate_config(self.optimizer).get("learning_rate"), dict)

    @property
    def moving_average(self) -> bool:
        """Whether the optimizer keeps a moving average of the weights (``use_ema=True``)."""
        return bool(learning_rate_config(self.optimizer).get("use_ema"))

    def scaled(self, factor: float) -> "CompileSettings":
        """The same settings with the workers' learning rate multiplied by ``factor`` (not
        a schedule's: it runs as compiled)."""
        if factor == 1.0 or self.scheduled:
            return self
        config = {**self.optimizer, "config": dict(self.optimizer["config"])}
        inner = config["config"].get("inner_optimizer")
        if isinstance(inner, dict):
            config["config"]["inner_optimizer"] = {**inner, "config": dict(inner["config"])}
        lr = self.learning_rate * factor
        if isinstance(learning_rate_config(config).get("learning_rate"), (int, float)):
            learning_rate_config(config)["learning_rate"] = lr
        return replace(self, optimizer=config, learning_rate=lr, factor=self.factor * factor)


def _optimizer(value):
    import keras

    if isinstance(value, dict):
        return deserialize(keras.optimizers, value)
    return keras.optimizers.get(value) if isinstance(value, str) else value
