"""Policies: pure functions of (store snapshot, metrics, now) that decide traffic, phase-in,
gates, expiry, shadows, autoscaling, what may be deleted or swapped, and the desired state.
No I/O here: nothing in this package imports Redis, RQ, HTTP or a platform.
"""
