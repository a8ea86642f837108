"""Benchmarks and cross-validated evidence, run as modules from the repository root (``python -m bench.run``); they
import the project like any user code."""
