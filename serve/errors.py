"""Errors the engine and services raise; the HTTP layer maps each kind to TGI- or OpenAI-shaped JSON."""


class ServeError(Exception):
    status = 500
    kind = "generation"  # TGI's error_type

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(ServeError):
    status, kind = 422, "validation"


class AdapterNotFound(ServeError):
    status, kind = 404, "adapter_not_found"


class AdapterInvalid(ServeError):
    """An adapter directory that fails validation; the server keeps serving everything else."""

    status, kind = 422, "adapter_invalid"


class Overloaded(ServeError):
    status, kind = 429, "overloaded"


class Unavailable(ServeError):
    status, kind = 503, "unavailable"


class GenerationFailed(ServeError):
    status, kind = 424, "generation"


class Timeout(ServeError):
    """The request's deadline (the server's request timeout) passed; the engine dropped its row."""

    status, kind = 504, "timeout"
