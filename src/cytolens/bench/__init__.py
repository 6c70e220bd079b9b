"""``cytolens bench``: how fast this machine trains and runs every model, against its own matrix-multiply peak
and against the papers' Keras stack, written as ``benchmarks/results/<date>-<host>.json`` and ``.md``.

- :mod:`~cytolens.bench.workloads`: each capability's real training task on in-memory data, timed step by step;
- :mod:`~cytolens.bench.machine`: machine facts and the fp32 / bf16 matrix-multiply peak;
- :mod:`~cytolens.bench.inference`: classification, whole-image segmentation, profiling and simulator throughput;
- :mod:`~cytolens.bench.peer`: cytolens and Keras alternating in child processes (:mod:`~cytolens.bench.keras_peer`);
- :mod:`~cytolens.bench.runner`: the whole bench; :mod:`~cytolens.bench.report`: its markdown table.

Nothing here is imported by the rest of cytolens; the bench imports torch lazily so ``cytolens --help`` stays fast.
"""
