"""The local platform: the same Knative objects, realised on this machine by the gateway
(ingress + activator) and the supervisor (runtime processes), plus the launcher that
`ffctl up` and `ffctl down` use. Imports nothing of the API or the jobs.
"""
