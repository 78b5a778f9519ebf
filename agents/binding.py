"""Turn a plain tool function ``tool(ctx, ...)`` into an AutoGen ``FunctionTool`` bound to one run and one agent.

The bound tool runs the diffusers work in a thread (so the event loop keeps streaming), records the call in the
transcript, tells the plan what was produced, and returns one line of text with the new artifact ids -- never
pixels. Errors caused by the caller's arguments (:class:`~openmora.errors.OpenMoraError`) become the tool's error
message, which the planner sees; any other exception is a bug of ours and stops the run.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import typing
from collections.abc import Callable
from typing import Any

from autogen_core.tools import FunctionTool

from openmora.errors import OpenMoraError
from openmora.tools.context import ToolContext, ToolResult


class ToolObserver(typing.Protocol):
    def tool_succeeded(self, agent: str, tool: str, result: ToolResult, arguments: dict, seconds: float) -> None: ...
    def tool_failed(self, agent: str, tool: str, error: BaseException, arguments: dict, seconds: float) -> None: ...


def bind_tool(fn: Callable[..., ToolResult], ctx: ToolContext, agent: str, observer: ToolObserver) -> FunctionTool:
    """Bind ``ctx`` into ``fn`` and expose the rest of its typed, documented signature to the LLM."""
    hints = typing.get_type_hints(fn)
    params = [
        p.replace(annotation=hints.get(p.name, p.annotation))
        for name, p in inspect.signature(fn).parameters.items()
        if name != "ctx"
    ]
    signature = inspect.Signature(params, return_annotation=str)

    async def tool(**kwargs: Any) -> str:
        start = time.perf_counter()
        try:
            result = await asyncio.to_thread(fn, ctx, **kwargs)
        except BaseException as err:
            observer.tool_failed(agent, fn.__name__, err, kwargs, time.perf_counter() - start)
            if isinstance(err, OpenMoraError):
                raise ValueError(str(err)) from None
            raise
        observer.tool_succeeded(agent, fn.__name__, result, kwargs, time.perf_counter() - start)
        return result.text + "".join(f" (note: {n})" for n in result.notes)

    tool.__name__ = fn.__name__
    tool.__doc__ = fn.__doc__
    tool.__signature__ = signature  # type: ignore[attr-defined]
    tool.__annotations__ = {p.name: p.annotation for p in params} | {"return": str}
    return FunctionTool(tool, description=inspect.cleandoc(fn.__doc__ or fn.__name__), name=fn.__name__)
