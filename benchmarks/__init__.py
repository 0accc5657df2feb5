"""Benchmarks of the deepnotes pipeline (not tests: nothing here asserts a time).

- ``python -m benchmarks.throughput``: training throughput, pipeline vs a hand-written PyTorch loop, with a cost
  breakdown when the pipeline is more than 10 % slower.
- ``python -m benchmarks.startup``: start-up cost of each DVC stage and of a no-op ``dvc repro``.
- ``python -m benchmarks.pipeline_walltime --repo DIR --log FILE``: seconds per stage of a real ``dvc repro``.
- ``python -m benchmarks.run_all`` (``make bench``): the first two, then ``benchmarks/RESULTS.md``.
"""
