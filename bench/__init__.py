"""Queue Manager benchmarks: bulk add, drain by Python workers, add-to-start latency (`python -m bench`)."""
