"""The catalog's datasets, one module each (or one per family sharing files), each registering its
:class:`~pipelines.data.catalog.DatasetEntry` with :func:`~pipelines.data.catalog.register` beside its declaration.

:mod:`pipelines.data.catalog` imports every module here when it is imported. To add a dataset, add a module here
that registers its entry (files with their sha256, provenance, task, modality and ``preparer="module:function"``)
and write its preparer under :mod:`pipelines.data.preparers`; nothing else changes.
"""
