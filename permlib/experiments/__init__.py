"""Experiment runners: one module per paper reproduction, each exposing
``run(mode="ci", seed=0, ...) -> dict`` and ``python -m permlib.experiments.<name> --mode full``."""
