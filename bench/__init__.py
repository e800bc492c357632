"""darkd benchmarks: each module runs on its own with `python -m bench.<name>`; `python -m bench` runs them all."""
