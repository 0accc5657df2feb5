"""The DVC stages, one thin entry point each (``python -m pipelines.stages.<stage>``; ``deepnotes <stage>``):
``resolve``, ``prepare``, ``augment``, ``train``, ``evaluate``, ``diagnose``, ``report`` and the opt-in ``tune``.
Each parses its command line, loads the params and calls the library."""
