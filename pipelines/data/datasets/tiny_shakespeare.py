"""Tiny Shakespeare, for the one-to-many RNN of notes 002 ("TYPES OF RNN"): a character-level language model
(char-rnn, nanoGPT's shakespeare_char); :mod:`pipelines.data.preparers.chars`."""

from __future__ import annotations

from pipelines.data.catalog import DatasetEntry, RawFile, register

register(
    DatasetEntry(
        "tiny_shakespeare",
        "language_model",
        "txt",
        "chars",
        files=(
            RawFile(
                "tiny_shakespeare/input.txt",
                ("86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",),
                urls=(
                    "https://raw.githubusercontent.com/karpathy/char-rnn/"
                    "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/data/tinyshakespeare/input.txt",
                ),
            ),
        ),
        source="Tiny Shakespeare: works of William Shakespeare concatenated by Andrej Karpathy for char-rnn (GitHub "
        "karpathy/char-rnn, data/tinyshakespeare/input.txt); 1,115,394 ASCII characters, 65 distinct",
        citation="Karpathy (2015), The Unreasonable Effectiveness of Recurrent Neural Networks",
        license="public domain text (Shakespeare); the char-rnn repository is MIT-licensed",
        preparer="pipelines.data.preparers.chars:prepare_tiny_shakespeare",
    ),
)
