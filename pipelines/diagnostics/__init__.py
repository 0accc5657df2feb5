"""Diagnostics of a trained experiment: the bias/variance verdict (``bias_variance``) and the refits behind it
(``refits``: learning curve, seed spread, bootstrap). The gradient-flow callback is part of training
(:mod:`pipelines.training.gradient_flow`)."""
