"""Sequence architectures: recurrent text classifiers."""
