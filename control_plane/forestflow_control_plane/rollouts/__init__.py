"""Rollouts carried out: the engine that loads, steps a policy, saves and applies; deploys,
in-place swaps, the RQ jobs and worker, the periodic reconcile, and the metrics gates read.
Takes its platform and metrics source as arguments; imports no concrete platform."""
