"""Reproducible benchmarks of curator_stages: the reference pipeline run several ways, side by side.

    python -m benchmarks.run --sizes 10000 200000 1000000 --repeats 3 --repeats-for 1000000=1

``benchmarks/README.md`` has every benchmark's command; ``benchmarks/BENCHMARKS.md`` what is
measured, how, and the table of latest results (generated from ``results/latest.json``).
"""
