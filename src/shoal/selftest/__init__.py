"""``shoal selftest``: a Jepsen-style check of shoal's promises on a cluster of its own.

A run starts a fresh cluster (``cluster``), drives a workload of tasks with known outcomes through it
(``workload``, running the ``selftest`` task type of ``tasks``) while a nemesis injects faults on a schedule
drawn from the seed (``faults``), then reads the history back (``history``) and checks it (``checker``, a
pure function) and reports (``report``). ``runner`` ties the steps together.
"""
