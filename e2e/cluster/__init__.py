"""The test cluster for e2e/knative: `python -m e2e.cluster up|down` (cluster.py)."""
