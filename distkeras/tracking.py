"""MLflow tracking of a fit: one driver-side run with the run's parameters, per-epoch metrics
(training, validation, parameter-server statistics) and the model, logged with its input
signature so that ``mlflow.pyfunc.load_model(...)`` predicts.

Turn it on with the trainer Param ``mlflow=True`` (or an experiment name), with an
:class:`MLflowLogger` in ``callbacks`` (to choose the run name, tags or whether the model is
logged), or with ``--mlflow`` in ``jobs/train.py`` and ``jobs/pipeline.py``. The tracking URI
is MLflow's own (``MLFLOW_TRACKING_URI`` or ``mlflow.set_tracking_uri``), or ``tracking_uri=``.

Inside an active run (``with mlflow.start_run():``) the fit logs into that run. A user who
called ``mlflow.keras.autolog()`` gets no second run: autolog opens runs from Keras' own
``Model.fit``, which distkeras never calls on the driver (the workers train in Spark executors,
where the driver's autolog does not reach). A fit that fails ends its run as FAILED.

Example::

    mlflow.set_tracking_uri("sqlite:///mlflow.db")
    fitted = ADAG(model, mlflow="hlf-adag", ...).fit(df, validation_data=test_df)
    mlflow.pyfunc.load_model(f"runs:/{fitted.history.mlflow_run_id}/model").predict(x)
"""
from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

try:
    import keras

    _Callback = keras.callbacks.Callback
except ImportError:  # pragma: no cover - keras is a dependency
    _Callback = object

log = logging.getLogger(__name__)


def _mlflow():
    try:
        import mlflow
    except ImportError as exc:
        raise ImportError("MLflow tracking needs mlflow: pip install 'distkeras[mlflow]' (or "
                          "mlflow-skinny)") from exc
    return mlflow


class MLflowLogger(_Callback):
    """A Keras callback that logs a distkeras fit to MLflow (see the module docstring).

    Args:
        experiment: experiment name (None: MLflow's active one).
        run_name: the run's name (None: ``"<Trainer> x<workers>"``).
        log_model: log the trained model with its signature at the end of the fit.
        tracking_uri: overrides MLflow's tracking URI for this fit.
        tags: extra run tags.
    """

    def __init__(self, experiment: str | None = None, run_name: str | None = None,
                 log_model: bool = True, tracking_uri: str | None = None,
                 tags: dict[str, str] | None = None):
        super().__init__()
        self.experiment, self.run_name, self.log_model = experiment, run_name, log_model
        self.tracking_uri, self.tags = tracking_uri, dict(tags or {})
        self.run_params: dict[str, Any] = {}
        self.example: Any = None
        self.run_id: str | None = None
        self._owns_run = False

    def configure(self, params: dict[str, Any], example: Any, run_name: str) -> None:
        """What the driver knows of the run: its parameters and a few rows of input."""
        self.run_params, self.example = params, example
        self.run_name = self.run_name or run_name

    def on_train_begin(self, logs=None):
        mlflow = _mlflow()
        if self.tracking_uri:
            mlflow.set_tracking_uri(self.tracking_uri)
        active = mlflow.active_run()
        if active is None:
            if self.experiment:
                mlflow.set_experiment(self.experiment)
            active = mlflow.start_run(run_name=self.run_name)
            self._owns_run = True
        self.run_id = active.info.run_id
        mlflow.set_tags({"distkeras": "fit", **self.tags})
        mlflow.log_params({k: _param_value(v) for k, v in self.run_params.items()})

    def on_epoch_end(self, epoch, logs=None):
        metrics = {k: float(v) for k, v in (logs or {}).items()
                   if isinstance(v, (int, float, np.floating)) and math.isfinite(float(v))}
        if metrics:
            _mlflow().log_metrics(metrics, step=int(epoch))

    def on_train_end(self, logs=None):
        mlflow = _mlflow()
        if self.log_model:
            from mlflow.models import infer_signature

            example = self.example
            signature = (infer_signature(example, np.asarray(self.model.predict(example,
                                                                                 verbose=0)))
                         if example is not None else None)
            mlflow.keras.log_model(self.model, name="model", signature=signature)
        self._end("FINISHED")

    def on_train_failed(self, error: BaseException) -> None:
        """The fit raised: record why and end the run as FAILED."""
        if self.run_id is None:
            return
        mlflow = _mlflow()
        mlflow.set_tag("error", str(error)[:5000])
        self._end("FAILED")

    def _end(self, status: str) -> None:
        if self._owns_run:
            _mlflow().end_run(status=status)
            self._owns_run = False
        log.info("MLflow run %s: %s", self.run_id, status.lower())


def _param_value(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return value


def run_params(trainer, algorithm, loss, optimizer: dict, learning_rate: float,
               worker_learning_rate: float | None = None) -> dict:
    """The parameters a run is compared by: algorithm, workers, λ, η (as given, and as the
    workers ran it after ``learning_rate_scaling``), batch size, epochs, the loss, the optimizer
    and the rule's own settings."""
    from distkeras.feed import loss_name

    params = {"trainer": trainer.name, "algorithm": algorithm.name,
              "num_workers": trainer.num_workers,
              "communication_window": algorithm.communication_window,
              "learning_rate": learning_rate, "batch_size": trainer.batch_size,
              "epochs": trainer.epochs, "loss": loss_name(loss) or str(loss),
              "worker_optimizer": optimizer.get("class_name"), "data_feed": trainer.data_feed,
              "learning_rate_scaling": getattr(trainer, "learning_rate_scaling", "none"),
              "worker_learning_rate": (learning_rate if worker_learning_rate is None
                                       else worker_learning_rate)}
    config = algorithm.get_config()
    params.update({k: v for k, v in config.items() if k not in params
                   and isinstance(v, (int, float, str, bool))})
    return params


def loggers(trainer, callbacks: list) -> list[MLflowLogger]:
    """The run's MLflow loggers: those among ``callbacks``, or one the ``mlflow`` Param asks
    for (appended to ``callbacks``)."""
    found = [cb for cb in callbacks if isinstance(cb, MLflowLogger)]
    if trainer.mlflow and not found:
        found = [MLflowLogger(experiment=trainer.mlflow if isinstance(trainer.mlflow, str)
                              else None)]
        callbacks.extend(found)
    if found:
        _mlflow()      # fails now, with the install hint, not after training
    return found
