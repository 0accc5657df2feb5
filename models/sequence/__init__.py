"""Sequence architectures: the recurrent network ``rnn`` (rnn | lstm | gru cells), the strided 1D convolution
``conv1d_text`` and the character language model ``char_rnn``; :mod:`models.sequence.core` holds what the
recurrent ones share."""
