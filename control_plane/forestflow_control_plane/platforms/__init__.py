"""Platforms realise desired state: `local` (this machine) and, later, `knative`.

A platform takes `DesiredState` and nothing else; it never reads the contract store.
"""
