"""Benchmarks of permlib against the libraries a user would otherwise reach for.

``python -m benchmarks.run --quick`` (a few minutes) or ``--full``: Sinkhorn forward and
forward+backward (permlib, the textbook log-domain loop of :mod:`benchmarks.textbook`, pygmtools,
POT, OTT-JAX), peak memory as the number of iterations grows, and batched exact matching (scipy,
lapx). Results go to ``benchmarks/results/bench_<mode>.json`` with a figure next to them.
"""
