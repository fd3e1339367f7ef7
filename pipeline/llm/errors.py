"""The one error tree of `pipeline.llm`.

    LLMError                    anything a provider raises; `partial` says whether events were yielded
    ├── LLMUnavailable          could not get an answer: connect error, 5xx, 429, timeout, or the stream
    │   │                       died part-way (then `partial` is True and it is not retried)
    │   └── ModelAssetError     the local model file cannot be assembled: a part package is missing, or
    │                           the joined bytes do not match the pinned size/SHA-256
    ├── LLMBadResponse          got an answer that breaks the contract: malformed SSE/JSON, a tool call
    │                           naming an undeclared tool or with arguments invalid against its schema
    └── LLMRequestError         the request cannot be served as given: an endpoint's other 4xx (bad key,
                                unknown model, too long), or a prompt whose system part, tools and latest
                                message alone do not fit the local context window

Providers retry only `LLMUnavailable`, and only before the first event has been yielded, so a retry
never repeats text the caller has already heard nor a tool call the runtime may have executed.
"""

from __future__ import annotations


class LLMError(Exception):
    """Base of every error a provider raises."""

    def __init__(self, message: str, *, partial: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.partial = partial  # some events had already been yielded when this was raised
        self.status = status  # the upstream HTTP status, when there was one


class LLMUnavailable(LLMError):
    """No (complete) answer: connect failure, 5xx/429, timeout, or the stream broke mid-way."""


class LLMBadResponse(LLMError):
    """An answer that breaks the protocol or the tool contract."""


class ModelAssetError(LLMUnavailable):
    """The local model cannot be assembled from its installed part packages."""


class LLMRequestError(LLMError):
    """The request itself cannot be served (for example it cannot fit the model's context window)."""
