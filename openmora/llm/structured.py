"""Structured output (a reply forced to a JSON schema) through ``--llm openai``, on OpenAI and on llama.cpp servers.

The planner asks for its plan with ``extra_create_args={"response_format": response_format_for(schema, "plan")}``.
The servers an OpenAI-compatible client may reach do not agree on that field's shape:

| server | ``response_format`` it honours |
|---|---|
| OpenAI, vLLM, llama.cpp's ``llama-server``, the embedded client | ``{"type": "json_schema", "json_schema": {"name": N, "schema": S}}`` |
| llama-cpp-python's ``python -m llama_cpp.server`` (0.3.36) | ``{"type": "json_object", "schema": S}`` only |

llama-cpp-python's server checks ``type`` against ``Literal["text", "json_object"]`` before it reads anything else, so
``json_schema`` fails with HTTP 500 (a pydantic ``literal_error`` naming ``response_format``) whatever else the dict
holds. OpenAI rejects a key it does not know inside ``response_format`` with HTTP 400
(``Unknown parameter: 'response_format.schema'``). So no one dict works on both, and adding ``"schema"`` beside the
standard shape breaks OpenAI without fixing llama-cpp-python.

The smallest change that keeps one planner request for every server: send the standard shape
(:func:`response_format_for`), and let :class:`StructuredFallbackClient` (:func:`with_structured_fallback`) retry
a request the server refused for its ``response_format`` once in llama-cpp-python's shape
(:func:`llama_cpp_response_format`), then keep using that shape for that client. Against OpenAI nothing changes;
against llama-cpp-python's server the first structured request costs one refused round trip (the OpenAI SDK retries
the 500 twice: about 1.5 s), later ones none.

Example:
    >>> rf = response_format_for({"type": "object"}, "plan")
    >>> rf
    {'type': 'json_schema', 'json_schema': {'name': 'plan', 'schema': {'type': 'object'}}}
    >>> llama_cpp_response_format(rf)
    {'type': 'json_object', 'schema': {'type': 'object'}}
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

# OpenAI's rule for json_schema.name: letters, digits, underscores and dashes, at most 64.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Statuses a server answers a response_format it does not take with: 400 (OpenAI-style), 422 (FastAPI's
# validation), 500 (llama-cpp-python 0.3.36 and older llama-server builds report the validation error as one).
_REJECTION_STATUSES = (400, 422, 500)


def response_format_for(schema: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The ``response_format`` that asks for a reply matching ``schema``, in OpenAI's structured-output shape.

    This is the shape OpenAI, vLLM, llama.cpp's ``llama-server`` and the embedded client
    (:class:`openmora.llm.local.LocalLlamaClient`) take. llama-cpp-python's server refuses it; a client wrapped by
    :func:`with_structured_fallback` re-sends it there as :func:`llama_cpp_response_format` (see the module doc for
    why no single dict serves both). ``strict`` is left out (OpenAI's default, false): strict mode accepts only a
    subset of JSON Schema (every property required, ``additionalProperties: false`` everywhere) that the planner's
    schema, with its optional arguments, is not in.

    Args:
        schema: a JSON schema (a dict), sent as it is.
        name: the schema's name, as OpenAI requires it: 1 to 64 letters, digits, ``_`` or ``-``.
    """
    if not isinstance(schema, Mapping):
        raise ValueError(f"response_format_for: schema must be a JSON schema dict, got {type(schema).__name__}")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"response_format_for: name {name!r} must be 1-64 letters, digits, '_' or '-'")
    return {"type": "json_schema", "json_schema": {"name": name, "schema": dict(schema)}}


def llama_cpp_response_format(response_format: Mapping[str, Any]) -> dict[str, Any]:
    """``response_format`` as llama-cpp-python's server takes it: ``{"type": "json_object", "schema": ...}``.

    That server turns the schema into a llama.cpp grammar, so the reply is forced to it. A ``response_format`` of
    another type (``text``, ``json_object``) is returned unchanged.
    """
    if response_format.get("type") != "json_schema":
        return dict(response_format)
    inner = response_format.get("json_schema")
    schema = inner.get("schema") if isinstance(inner, Mapping) else None
    if not isinstance(schema, Mapping):
        raise ValueError('response_format of type json_schema needs {"json_schema": {"schema": {...}}}')
    return {"type": "json_object", "schema": dict(schema)}


def is_response_format_rejection(err: BaseException) -> bool:
    """Whether ``err`` is a server refusing a ``json_schema`` ``response_format`` (as opposed to any other failure).

    True for an ``openai.APIStatusError`` with status 400, 422 or 500 whose message names both ``response_format``
    and ``json_schema``: llama-cpp-python's server says ``('body', 'response_format', 'type') ... Input should be
    'text' or 'json_object' ... 'input': 'json_schema'``.
    """
    if getattr(err, "status_code", None) not in _REJECTION_STATUSES:
        return False
    text = f"{err} {getattr(err, 'body', '')}"
    return "response_format" in text and "json_schema" in text


class StructuredFallbackClient:
    """Wraps an AutoGen model client: a structured request a server refuses is sent again in llama.cpp's shape.

    Everything else is passed through untouched (``inner`` is the wrapped client, as in
    :class:`openmora.llm.clients.TimedClient`). After the first refusal the wrapper remembers
    (``llama_cpp_shape``) and translates every later request up front, streamed ones included.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.llama_cpp_shape = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _translated(self, extra_create_args: Mapping[str, Any] | None) -> dict[str, Any]:
        extra = dict(extra_create_args or {})
        rf = extra.get("response_format")
        if isinstance(rf, Mapping) and rf.get("type") == "json_schema":
            extra["response_format"] = llama_cpp_response_format(rf)
        return extra

    async def create(self, *args: Any, extra_create_args: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        extra = dict(extra_create_args or {})
        if self.llama_cpp_shape:
            return await self.inner.create(*args, extra_create_args=self._translated(extra), **kwargs)
        try:
            return await self.inner.create(*args, extra_create_args=extra, **kwargs)
        except Exception as err:
            rf = extra.get("response_format")
            if not (isinstance(rf, Mapping) and rf.get("type") == "json_schema" and is_response_format_rejection(err)):
                raise
            logger.info("the server refused response_format json_schema; sending llama.cpp's json_object + schema")
            self.llama_cpp_shape = True
            return await self.inner.create(*args, extra_create_args=self._translated(extra), **kwargs)

    def create_stream(self, *args: Any, extra_create_args: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        extra = self._translated(extra_create_args) if self.llama_cpp_shape else dict(extra_create_args or {})
        return self.inner.create_stream(*args, extra_create_args=extra, **kwargs)


def with_structured_fallback(client: Any) -> Any:
    """``client`` wrapped in :class:`StructuredFallbackClient` (once: a client already wrapped is returned as is)."""
    if client is None or isinstance(client, StructuredFallbackClient):
        return client
    return StructuredFallbackClient(client)
