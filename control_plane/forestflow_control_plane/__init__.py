"""ForestFlow's control plane. Where a request goes: `api/` (HTTP) -> `rollouts/` (jobs that
step policies) -> `platforms/` (realise desired state). Where a policy decides: `policies/`.
`composition` wires concrete parts from `settings`; `names` names every key and object.

It never sits in the inference path and imports nothing from the runtime or the CLI.
"""
