"""Hyperparameter searches with Optuna: search spaces (``search_space``), samplers, pruners and budgeted studies
(``studies``), and the search itself: sessions, workers and trials (``search``)."""
