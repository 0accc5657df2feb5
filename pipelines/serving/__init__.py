"""Serving a trained experiment on raw input: the MLflow pyfunc model ``train`` logs and ``evaluate`` registers.

A served model is a *bundle* of plain data (:mod:`pipelines.serving.bundle`):

- ``serving.json``: the architecture, its :class:`~models.registry.NetworkSpec` and ``model:`` block, the task and
  the ``meta.json`` fields it reads (classes), and the raw input (:mod:`pipelines.data.encoding`: the train-only
  statistics, the one-hot categories, the image scaling, the text cleaning);
- ``weights.pt``: the network's ``state_dict``, read with ``torch.load(weights_only=True)``;
- the raw input's own files (``tokenizer.json``).

The pyfunc is an MLflow "model from code" (:mod:`pipelines.serving.model`): MLflow stores the code file and the
bundle, never a pickled object, so loading it with ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`` unpickles nothing.
It rebuilds the network from the registry, encodes the raw request as the preparer encoded its splits, and answers
what the task predicts (:meth:`pipelines.tasks.base.Task.serve`): a label with class probabilities, a value, a box.
"""
