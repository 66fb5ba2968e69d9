"""A Jepsen-style ledger for the fault-injection suite (``make test-faults``).

Producers record every add they try and how it ended (``producer.py``); worker processes record every run
they start and finish (``worker.py``), each process in an append-only journal of its own (``journal.py``);
``checker.py`` reads the journals and the Redis state after a scenario and reports lost, duplicated and
unexpected jobs, and ``invariants.py`` scans Redis for broken invariants. ``faultkit.py`` holds the fault
injectors the scenarios share: a Valkey process to SIGKILL and restart, a TCP proxy whose connections go
silent, resource samples of a process.
"""
