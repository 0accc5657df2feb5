"""Data: the dataset catalog (``catalog``), verified fetching (``fetch``), file readers (``readers``), the per-dataset
preparers (``preparers``), the on-disk prepared format (``prepared``), offline augmentation (``augmentation``) and
the batches a fit reads (``datamodule``)."""
