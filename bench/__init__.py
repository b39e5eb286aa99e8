"""shoal's benchmark: one set of workloads, one adapter per task system (see bench/README.md)."""
