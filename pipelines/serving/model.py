"""The code of every served deepnotes model (an MLflow "model from code": MLflow stores this file, not a pickle).

``mlflow models serve`` (or ``mlflow.pyfunc.load_model``) runs this file, then :meth:`ServedModel.load_context`
rebuilds the network and its raw-input encoding from the ``bundle`` artifact (:class:`~pipelines.serving.bundle.Bundle`).
Needs the deepnotes package importable (``--env-manager local`` in the project's venv, as ``make serve`` runs it).
"""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow.pyfunc import PythonModel


class ServedModel(PythonModel):
    """Raw samples in (see the model's signature), the task's answer out (:meth:`Bundle.predict`)."""

    def load_context(self, context) -> None:
        from pipelines.serving.bundle import Bundle

        self.bundle = Bundle.read(Path(context.artifacts["bundle"]))

    @property
    def network(self):
        """The rebuilt network (``(N, *input_shape)`` prepared inputs -> raw outputs), for Python use."""
        return self.bundle.network

    # No type hints: MLflow would read them as the signature (the logged signature describes the raw input).
    def predict(self, context, model_input, params=None):
        return self.bundle.predict(model_input)


mlflow.models.set_model(ServedModel())
