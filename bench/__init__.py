"""Benchmarks (`python -m bench`) and the fault suite (`python -m bench.chaos`) of qbo-sync.

Both drive the real processes (the QBO emulator, the sync service, the api) as subprocesses over
loopback HTTP, Kafka and MongoDB, because the figures that matter are the ones a deployment sees:
serialisation, network hops and the database included. Nothing here asserts on timings; the
benchmark prints figures and the fault suite checks only that no data was lost or duplicated.
"""
