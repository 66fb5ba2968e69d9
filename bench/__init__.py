"""Queue Manager benchmarks: bulk add, drain by Python workers, add-to-start latency (`python -m bench`)."""

# The features scenario: the name of the jobs whose first attempt fails (bench/producer.py adds them, every
# 10th; bench/worker.py fails them once, by name, without decoding their data).
FAILS_ONCE = "fails-once"
