"""What can go wrong with a record, whoever finds out: the store on write, or a policy that
refuses a change. The API maps them to 404 and 409."""

from __future__ import annotations


class NotFoundError(LookupError):
    """No such contract or variant."""


class ConflictError(RuntimeError):
    """Someone else wrote the record first, or the change contradicts what is stored."""
