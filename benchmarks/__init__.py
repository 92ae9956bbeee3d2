"""The benchmarks, run as modules from the repository root: ``python -m benchmarks.<name> ...`` (see README.md here)."""
