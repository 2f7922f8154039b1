"""Knative's vocabulary, pure: object builders (desired state -> Service and Route),
admission as the cluster would judge them, value rules, the annotation table, rendering
for `--dry-run`, and the upstream CRDs. No Kubernetes client here."""
