"""Performance figures, run by `make bench`, written to benchmarks/results.json."""
