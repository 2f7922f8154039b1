"""ForestFlow's control plane: model.yaml schema, the contract store (Redis), policies,
desired state, rollout jobs (RQ), the API, and the platforms that realise desired state.

It never sits in the inference path and imports nothing from the runtime or the CLI.
"""
