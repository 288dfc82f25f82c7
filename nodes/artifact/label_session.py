"""Open labelling requests between a waiting Label Artifacts node and the editor. Pure (asyncio, threading).

The node opens a request (what to show) and awaits its answer; the server's route hands the editor's answer in
from the web server's thread. One request per node run, named by a random token, so several Label nodes (or
several queued runs of one) never mix their answers. The waiting honours Cancel (``check_interrupt``) and a
deadline; a refused answer (wrong length, unknown label) leaves the request open and says why.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .labelling import parse_response


class UnknownRequest(KeyError):
    """No open labelling request has that token (answered, timed out, cancelled, or from an earlier server)."""

    __module__ = "sentinel"

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0]) if self.args else "unknown labelling request"


@dataclass
class LabelRequest:
    token: str
    node: str
    batch: int
    payload: dict[str, Any]
    deadline: float
    timeout_s: float
    prompt_id: str | None = None
    display_node: str | None = None
    workflow_id: str | None = None
    answer: tuple[str, list] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def public(self, now: float) -> dict[str, Any]:
        """What the editor gets (the request event and GET .../pending): JSON-safe, no tensors."""
        return {"token": self.token, "node": self.node, "display_node": self.display_node or self.node,
                "prompt_id": self.prompt_id, "workflow_id": self.workflow_id, "batch": self.batch,
                "timeout_s": self.timeout_s, "remaining_s": max(0.0, self.deadline - now), **self.payload}


class LabelBroker:
    """The open requests of this server process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self._open: dict[str, LabelRequest] = {}

    def open(self, node: str, batch: int, payload: dict[str, Any], timeout_s: float, prompt_id: str | None = None,
             display_node: str | None = None, workflow_id: str | None = None) -> LabelRequest:
        req = LabelRequest(token=uuid.uuid4().hex, node=str(node), batch=int(batch), payload=dict(payload),
                           deadline=self.clock() + float(timeout_s), timeout_s=float(timeout_s),
                           prompt_id=prompt_id, display_node=None if display_node is None else str(display_node),
                           workflow_id=workflow_id)
        with self._lock:
            self._open[req.token] = req
        return req

    def get(self, token: str) -> LabelRequest | None:
        with self._lock:
            return self._open.get(str(token))

    def answer(self, token: str, body: Any) -> tuple[str, list]:
        """Hand in the editor's answer; returns it parsed. UnknownRequest / ValueError leave everything open."""
        with self._lock:
            req = self._open.get(str(token))
            if req is None:
                raise UnknownRequest("no labelling request is waiting under that token (it was answered, timed out "
                                     "or cancelled); queue the workflow again to label a new batch")
            if req.answer is not None:
                raise ValueError("this batch was answered already")
            parsed = parse_response(body, req.batch)
            req.answer = parsed
            return parsed

    def pending(self) -> list[dict[str, Any]]:
        now = self.clock()
        with self._lock:
            return [r.public(now) for r in self._open.values() if r.answer is None]

    def close(self, token: str) -> None:
        with self._lock:
            self._open.pop(str(token), None)

    async def wait(self, token: str, check_interrupt: Callable[[], None] = lambda: None,
                   poll_s: float = 0.1) -> tuple[str, list] | None:
        """The answer, or None when the deadline passed. ``check_interrupt`` raises to cancel (ComfyUI's Cancel);
        the request is closed in every case."""
        try:
            while True:
                check_interrupt()
                req = self.get(token)
                if req is None:
                    raise UnknownRequest("the labelling request was closed while waiting")
                if req.answer is not None:
                    return req.answer
                if self.clock() >= req.deadline:
                    return None
                await asyncio.sleep(poll_s)
        finally:
            self.close(token)


BROKER = LabelBroker()
