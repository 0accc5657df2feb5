"""Generative architectures: autoencoders."""
