"""ComfyUI glue for Label Artifacts (click): two small routes on ComfyUI's own server and the websocket events.

  GET  /sentinel/label/pending   the open requests (an editor that was reloaded shows its batch again)
  POST /sentinel/label/answer    {"token", "action": "save"|"skip"|"cancel", "labels": [1, 0, null, ...]}
                                 200 {"ok": true, ...}; 400 / 404 {"error": "..."} and the request stays open

Events (``api.addEventListener`` in web/sentinel_label.js): ``sentinel.label.request`` (a request to show) and
``sentinel.label.done`` (it was answered, timed out or cancelled). Both go to every connected editor; an editor
shows a request only in a Label node of the same id and type in the same workflow. The routes are also served
under /api (ComfyUI mirrors every route there).
"""

from __future__ import annotations

import json
import logging

from .label_session import BROKER, UnknownRequest

log = logging.getLogger("diffusion_sentinel")
ROUTE_PENDING = "/sentinel/label/pending"
ROUTE_ANSWER = "/sentinel/label/answer"
EVENT_REQUEST = "sentinel.label.request"
EVENT_DONE = "sentinel.label.done"
MAX_ANSWER_BYTES = 1 << 20
_REGISTERED = False


def server_instance():
    """ComfyUI's PromptServer, or None (in-process runs without a server, tooling)."""
    try:
        from server import PromptServer
    except ImportError:
        return None
    return getattr(PromptServer, "instance", None)


def send(event: str, data: dict) -> bool:
    """Push an event to every connected editor; False when there is no server to push to."""
    srv = server_instance()
    if srv is None or not hasattr(srv, "send_sync"):
        return False
    srv.send_sync(event, data)
    return True


def register_routes() -> bool:
    """Add the routes to ComfyUI's route table (once; ComfyUI serves them after loading the custom nodes)."""
    global _REGISTERED
    if _REGISTERED:
        return True
    srv = server_instance()
    routes = getattr(srv, "routes", None)
    if routes is None:
        return False
    from aiohttp import web

    @routes.get(ROUTE_PENDING)
    async def sentinel_label_pending(request):
        return web.json_response({"pending": BROKER.pending()})

    @routes.post(ROUTE_ANSWER)
    async def sentinel_label_answer(request):
        if (request.content_length or 0) > MAX_ANSWER_BYTES:
            return web.json_response({"error": "the answer is too large"}, status=413)
        try:
            body = json.loads(await request.text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response({"error": "the answer must be JSON: {token, action, labels}"}, status=400)
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            return web.json_response({"error": "the answer needs the request's 'token'"}, status=400)
        try:
            action, labels = BROKER.answer(token, body)
        except UnknownRequest as e:
            return web.json_response({"error": str(e)}, status=404)
        except ValueError as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response({"ok": True, "action": action, "labels": labels})

    _REGISTERED = True
    return True
