"""What can go wrong serving a request, as exceptions with meaning; the edge maps them to HTTP."""


class RuntimeServingError(Exception):
    """Base of every error a client may see; its message is safe to return."""


class InvalidRequest(RuntimeServingError):
    """The request is malformed or does not match the declared inputs; names the field."""


class PayloadTooLarge(RuntimeServingError):
    """The request body is over the server's limit; refused before it is read whole."""


class ModelNotFound(RuntimeServingError):
    """The URL names a model this server does not serve."""


class ModelNotReady(RuntimeServingError):
    """The model is still loading or warming up, or the server is shutting down."""


class QueueFull(RuntimeServingError):
    """The bounded request queue is full; the client should retry after a pause."""


class DeadlineExceeded(RuntimeServingError):
    """The request's deadline passed before its result was ready."""


class ModelFailed(RuntimeServingError):
    """The model raised, or returned outputs that do not match the batch it was given."""


class ModelLoadError(RuntimeServingError):
    """An artifact could not be fetched, loaded or warmed up."""
