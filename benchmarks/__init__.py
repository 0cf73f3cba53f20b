"""Benchmarks of permlib against the libraries a user would otherwise reach for.

``python -m benchmarks.run --quick`` (a few minutes) or ``--full``: Sinkhorn forward and
forward+backward (permlib, the textbook loop :func:`permlib.testing.sinkhorn_loop`, pygmtools,
POT, OTT-JAX), peak memory as the number of iterations grows, and batched exact matching (scipy,
lapx). Results go to ``_build/bench/bench_<mode>_<device>.json`` with a figure next to them, or
with ``--record`` (quiet runs only) to the tracked ``benchmarks/results/`` that the book reads.
"""
