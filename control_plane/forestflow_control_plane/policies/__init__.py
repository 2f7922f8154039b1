"""Policies: pure functions of (store snapshot, metrics, now) that say what traffic
should be. No I/O here: nothing in this package imports Redis, RQ or a platform.
"""
