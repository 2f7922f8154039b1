"""Platforms realise desired state: `knative` (a cluster, by server-side apply) and `local`
(this machine). A platform takes `DesiredState` and nothing else;
it never reads the contract store.
"""
