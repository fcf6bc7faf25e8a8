"""Speed and memory benchmarks, run as modules from the project root: `python -m benchmarks.bench_loop`."""
