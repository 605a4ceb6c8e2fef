"""What every client of a model endpoint shares: the error, which failures are worth retrying, one retry policy.

Eval's chat clients, the data step's generator and the remote engine all speak to endpoints that may be busy
(429), restarting (5xx, connection refused) or wrong for good (4xx). `EndpointError.retryable` says which;
`with_retries` is the one loop that retries (tenacity: exponential backoff with jitter, bounded attempts).
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import httpx
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

T = TypeVar("T")
MAX_BACKOFF_S = 60.0


class EndpointError(RuntimeError):
    """A request that failed; `retryable` for transport errors, 429 and 5xx; `status` when there was an answer."""

    def __init__(self, message: str, retryable: bool, status: int | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status = status


def retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, EndpointError) and exc.retryable


def error_message(response: httpx.Response) -> str:
    """The error an endpoint sent, short: OpenAI's `error.message`, TGI's `error`, else the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)[:300]
    return str(error or body)[:300]


def client(url: str, api_key: str | None = None, timeout: float = 120) -> httpx.Client:
    """An httpx client for one endpoint, with its bearer token when it needs one."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)


def json_response(send: Callable[[], httpx.Response], where: str) -> tuple[httpx.Response, Any]:
    """Send one request; its response and JSON body, or an EndpointError that says whether to retry."""
    try:
        response = send()
    except httpx.HTTPError as exc:
        raise EndpointError(f"{where}: {type(exc).__name__}: {exc}", retryable=True) from None
    if response.status_code != 200:
        raise EndpointError(f"{where} answered {response.status_code}: {error_message(response)}",
                            retryable=retryable_status(response.status_code), status=response.status_code)
    try:
        return response, response.json()
    except ValueError:
        raise EndpointError(f"{where}: not JSON: {response.text[:200]}", retryable=True) from None


def with_retries(call: Callable[[], T], *, max_retries: int, backoff_s: float,
                 retry_if: Callable[[BaseException], bool] = is_retryable,
                 on_retry: Callable[[BaseException], None] | None = None) -> T:
    """`call()`, retried up to `max_retries` times while `retry_if(error)`; the last error goes up unchanged.

    The n-th wait is backoff_s * 2**(n-1) plus up to backoff_s of jitter (so that concurrent workers that
    failed together do not retry together), at most MAX_BACKOFF_S.
    """
    retrying = Retrying(
        stop=stop_after_attempt(max_retries + 1),
        wait=wait_exponential_jitter(initial=backoff_s, max=MAX_BACKOFF_S, jitter=backoff_s),
        retry=retry_if_exception(retry_if),
        before_sleep=(lambda state: on_retry(state.outcome.exception())) if on_retry else None,
        reraise=True,
    )
    return retrying(call)
