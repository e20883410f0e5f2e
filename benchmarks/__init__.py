"""Reproducible benchmarks of curator_stages: the reference pipeline run several ways, side by side.

    python -m benchmarks.run --sizes 10000 200000 1000000 --repeats 3 --repeats-for 1000000=1

See ``benchmarks/BENCHMARKS.md`` for what is measured, how, and the latest results.
"""
