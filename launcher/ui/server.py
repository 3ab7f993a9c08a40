"""The dashboard's web app (Starlette): pages, the JSON API under ``/api/``, server-sent events.

Security, as Jupyter does it for a local server that can stop jobs:

* a random token (``secrets.token_urlsafe(24)``) is printed in the URL; every request needs
  it — ``?token=`` (the first visit; it becomes an HttpOnly SameSite=Strict cookie and the
  page is reloaded without it), the cookie, or the ``X-Alaunch-Token`` header — else 401;
* the ``Host`` header must name this server (loopback names or the bound address), else 403:
  a DNS-rebinding page cannot borrow the browser's cookie;
* state-changing requests (cancel, fetch) are POST only, need the token in the
  ``X-Alaunch-Token`` header (a cross-site form or ``fetch`` cannot set it without a CORS
  preflight, which this server never grants) and a same-origin ``Origin`` when one is sent.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from http.cookies import SimpleCookie
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from launcher.errors import AlaunchError, InputError
from launcher.ui import data
from launcher.ui.hub import Hub

COOKIE = "alaunch_token"
HEADER = "x-alaunch-token"
LIST_LIMIT = 200
LIST_WATCHED = 20  # newest jobs whose logs the list reads (last loss, progress)
LIST_PUSH_S = 1.0
HEARTBEAT_S = 15.0
COMPARE_MAX = 8
STATIC = Path(str(resources.files("launcher.ui") / "static"))


def new_token() -> str:
    return secrets.token_urlsafe(24)


class TokenGuard:
    """ASGI middleware: the token, the Host check and the POST rules above."""

    def __init__(self, app, token: str, hosts: set[str]):
        self.app, self.token, self.hosts = app, token, {h.lower() for h in hosts}

    def _ok(self, candidate: str | None) -> bool:
        return bool(candidate) and secrets.compare_digest(candidate.encode(), self.token.encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if headers.get("host", "").lower() not in self.hosts:
            return await PlainTextResponse("alaunch ui: unexpected Host header\n", 403)(scope, receive, send)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:
            pass
        from_query = (query.get("token") or [None])[0]
        from_cookie = cookie[COOKIE].value if COOKIE in cookie else None
        from_header = headers.get(HEADER)
        if scope["method"] not in ("GET", "HEAD"):
            origin = headers.get("origin")
            if origin is not None and origin.split("://", 1)[-1].lower() not in self.hosts:
                return await PlainTextResponse("alaunch ui: cross-site request refused\n", 403)(scope, receive, send)
            if not self._ok(from_header):
                return await PlainTextResponse("alaunch ui: this request needs the X-Alaunch-Token header\n",
                                               403 if self._ok(from_cookie) else 401)(scope, receive, send)
            return await self.app(scope, receive, send)
        if not (self._ok(from_query) or self._ok(from_cookie) or self._ok(from_header)):
            return await PlainTextResponse("alaunch ui: token required; open the URL `alaunch ui` printed\n",
                                           401)(scope, receive, send)
        if self._ok(from_query) and not scope["path"].startswith("/api/"):
            rest = {k: v for k, v in query.items() if k != "token"}
            target = scope["path"] + (("?" + urlencode(rest, doseq=True)) if rest else "")
            response = RedirectResponse(target, 303)
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict", path="/")
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def allowed_hosts(host: str, port: int) -> set[str]:
    names = {"127.0.0.1", "localhost", "[::1]", host if ":" not in host else f"[{host}]"}
    return {f"{n}:{port}" for n in names}


def _error(exc: AlaunchError, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status)


def _sse(message: dict | str) -> bytes:
    text = message if isinstance(message, str) else json.dumps(message, default=str)
    return f"data: {text}\n\n".encode()


def _poll_stream(request: Request, produce: Any) -> StreamingResponse:
    """Server-sent events of what ``produce()`` returns (read from the registry in a worker
    thread every LIST_PUSH_S), sent only when it changed, with a heartbeat comment between: the
    registry is the only source of a pipeline's step states, written by ``alaunch run`` in
    another process, so it is looked at, as the jobs list's stream does."""
    async def gen():
        last = None
        quiet = 0.0
        while not await request.is_disconnected():
            try:
                text = json.dumps(await run_in_threadpool(produce), default=str)
            except AlaunchError as exc:
                text = json.dumps({"type": "error", "error": exc.message})
            if text != last:
                last, quiet = text, 0.0
                yield _sse(text)
            elif quiet >= HEARTBEAT_S:
                quiet = 0.0
                yield b": beat\n\n"
            await asyncio.sleep(LIST_PUSH_S)
            quiet += LIST_PUSH_S
    return StreamingResponse(gen(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


def create_app(state_dir: Path, token: str, hosts: set[str], runs_dir: Path = Path("runs"),
               hub: Hub | None = None) -> Any:
    """The ASGI app: Starlette routes behind :class:`TokenGuard`."""
    hub = hub or Hub(state_dir)
    runs_dir = Path(runs_dir)
    shell = (STATIC / "index.html").read_text(encoding="utf-8")

    def page(request: Request) -> HTMLResponse:
        return HTMLResponse(shell.replace("{{TOKEN}}", token),
                            headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                     "Referrer-Policy": "no-referrer",
                                     "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                                                "img-src 'self' data:; frame-ancestors 'none'"})

    # ------------------------------------------------------------------ jobs
    def _rows() -> list[dict]:
        with hub.registry() as registry:
            records = registry.list(limit=LIST_LIMIT)
        rows = []
        for i, r in enumerate(records):
            w = hub.watch(r.id) if i < LIST_WATCHED and r.nodes else hub.get(r.id)
            rows.append(data.job_row(r, w.snapshot() if w else None))
        return rows

    async def jobs(request: Request) -> Response:
        try:
            rows = await run_in_threadpool(_rows)
            return JSONResponse(data.filter_rows(rows, request.query_params.get("state"),
                                                 request.query_params.get("q")))
        except AlaunchError as exc:
            return _error(exc)

    async def jobs_stream(request: Request) -> Response:
        async def gen():
            last = None
            quiet = 0.0
            while not await request.is_disconnected():
                try:
                    rows = await run_in_threadpool(_rows)
                    text = json.dumps({"type": "jobs", "jobs": data.filter_rows(rows)}, default=str)
                except AlaunchError as exc:
                    text = json.dumps({"type": "error", "error": exc.message})
                if text != last:
                    last, quiet = text, 0.0
                    yield _sse(text)
                elif quiet >= HEARTBEAT_S:
                    quiet = 0.0
                    yield b": beat\n\n"
                await asyncio.sleep(LIST_PUSH_S)
                quiet += LIST_PUSH_S
        return StreamingResponse(gen(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    def _detail(ref: str) -> dict:
        with hub.registry() as registry:
            record = registry.get(ref)
        w = hub.watch(record.id) if record.nodes else None
        return data.job_detail(record, w.snapshot() if w else None)

    async def job(request: Request) -> Response:
        try:
            return JSONResponse(await run_in_threadpool(_detail, request.path_params["job"]))
        except InputError as exc:
            return _error(exc, 404)
        except AlaunchError as exc:
            return _error(exc)

    async def job_config(request: Request) -> Response:
        try:
            with hub.registry() as registry:
                record = registry.get(request.path_params["job"])
        except InputError as exc:
            return _error(exc, 404)
        return PlainTextResponse(record.config_text)

    async def logs(request: Request) -> Response:
        q = request.query_params
        try:
            rank = int(q["rank"]) if q.get("rank") not in (None, "") else None
            after = int(q.get("after") or -1)
            limit = max(1, min(20_000, int(q.get("limit") or 2000)))
        except ValueError:
            return JSONResponse({"error": "rank, after and limit are integers"}, 400)
        try:
            grep = re.compile(q["grep"]) if q.get("grep") else None
        except re.error as exc:
            return JSONResponse({"error": f"grep: not a valid regular expression ({exc})"}, 400)
        try:
            with hub.registry() as registry:
                record = registry.get(request.path_params["job"])
        except InputError as exc:
            return _error(exc, 404)
        w = hub.watch(record.id)
        lines = data.log_filter(w.lines_since(-1), rank=rank, node=q.get("node") or None, grep=grep,
                                after=after, limit=limit)
        return JSONResponse({"lines": lines, "seq": w.seq})

    async def job_events(request: Request) -> Response:
        try:
            with hub.registry() as registry:
                record = registry.get(request.path_params["job"])
        except InputError as exc:
            return _error(exc, 404)
        w = hub.watch(record.id)
        sub = w.subscribe(asyncio.get_running_loop())

        async def gen():
            try:
                yield _sse({"type": "hello", "seq": w.seq})
                while True:
                    try:
                        message = await asyncio.wait_for(sub.queue.get(), HEARTBEAT_S)
                    except asyncio.TimeoutError:
                        if await request.is_disconnected():
                            return
                        yield b": beat\n\n"
                        continue
                    yield _sse(message)
                    if message.get("type") == "resync":
                        return  # the browser reconnects and reloads what it missed
            finally:
                w.unsubscribe(sub)
        return StreamingResponse(gen(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    # ------------------------------------------------------------------ actions
    async def cancel(request: Request) -> Response:
        def run() -> dict:
            with hub.registry() as registry:
                record = registry.get(request.path_params["job"])
                service = hub.connect(registry, hub.state_dir, record).service
                record, outcome = service.cancel(record.id, grace=5.0)
                return {"id": record.id, "state": record.state, "outcome": outcome}
        try:
            return JSONResponse(await run_in_threadpool(run))
        except AlaunchError as exc:
            return _error(exc, 409 if isinstance(exc, InputError) else 500)

    async def fetch(request: Request) -> Response:
        what = request.query_params.get("what") or "logs"

        def run() -> dict:
            from launcher.ops.collect import FetchError, fetch_job
            with hub.registry() as registry:
                record = registry.get(request.path_params["job"])
                try:
                    report = fetch_job(registry, record.id, what, runs_dir, hub.state_dir)
                except FetchError as exc:
                    report = exc.report
                return {"id": record.id, "run_dir": str(report.run_dir),
                        "bytes": report.bytes_transferred, "seconds": round(report.seconds, 3),
                        "nodes": [{"host": n.host, "error": n.error} for n in report.nodes],
                        "ok": not report.failed}
        try:
            return JSONResponse(await run_in_threadpool(run))
        except AlaunchError as exc:
            return _error(exc)

    # ------------------------------------------------------------------ pipelines
    def _pipeline_rows() -> list[dict]:
        with hub.registry() as registry:
            return [data.pipeline_row(run) for run in registry.pipelines(limit=LIST_LIMIT)]

    def _pipeline_detail(ref: str) -> dict:
        """A run from the registry, its steps' needs from its pipeline file (I/O here, parsing in
        data.py), each step's job as the jobs list shows it (a running one's progress from its
        follower) and the jobs its attempts submitted (among the newest LIST_LIMIT jobs)."""
        with hub.registry() as registry:
            run = registry.pipeline(ref)
            recent = registry.list(limit=LIST_LIMIT)
            step_jobs = {}
            for s in run.steps:
                if s.job_id and s.job_id not in step_jobs:
                    try:
                        step_jobs[s.job_id] = registry.get(s.job_id)
                    except InputError:  # pruned since
                        pass
        needs = data.recorded_needs(run)  # as the run recorded them; older runs: from the file
        if needs is None:
            try:
                text = Path(run.source).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError, ValueError):
                text = None
            needs = data.pipeline_needs(text, run.source, [s.step for s in run.steps]) if text is not None else None
        rows = {}
        for job_id, r in step_jobs.items():
            w = hub.watch(r.id) if (r.nodes and not r.terminal) else hub.get(r.id)
            rows[job_id] = data.job_row(r, w.snapshot() if w else None)
        return data.pipeline_detail(run, needs, rows, [r for r in recent if r.meta.get("pipeline") == run.id])

    async def pipelines(request: Request) -> Response:
        try:
            return JSONResponse(await run_in_threadpool(_pipeline_rows))
        except AlaunchError as exc:
            return _error(exc)

    async def pipelines_stream(request: Request) -> Response:
        return _poll_stream(request, lambda: {"type": "pipelines", "pipelines": _pipeline_rows()})

    async def pipeline(request: Request) -> Response:
        try:
            return JSONResponse(await run_in_threadpool(_pipeline_detail, request.path_params["run"]))
        except InputError as exc:
            return _error(exc, 404)
        except AlaunchError as exc:
            return _error(exc)

    async def pipeline_stream(request: Request) -> Response:
        ref = request.path_params["run"]
        return _poll_stream(request, lambda: {"type": "pipeline", "pipeline": _pipeline_detail(ref)})

    # ------------------------------------------------------------------ compare
    async def compare(request: Request) -> Response:
        ids = [i for part in request.query_params.getlist("ids") for i in part.split(",") if i.strip()]
        if not 2 <= len(ids) <= COMPARE_MAX:
            return JSONResponse({"error": f"compare takes 2 to {COMPARE_MAX} jobs (ids=a,b), got {len(ids)}"}, 400)

        def run() -> dict:
            from launcher.metrics.runfacts import collect
            with hub.registry() as registry:
                records = [registry.get(i) for i in ids]
            watches = [hub.watch(r.id) for r in records]
            for r, w in zip(records, watches):
                if r.terminal:
                    w.done.wait(30)  # a finished job's logs are read once, in full
            facts = [collect(runs_dir / r.id) if (runs_dir / r.id).is_dir() else None for r in records]
            return data.compare(records, [w.snapshot() for w in watches], facts)
        try:
            return JSONResponse(await run_in_threadpool(run))
        except InputError as exc:
            return _error(exc, 404)
        except AlaunchError as exc:
            return _error(exc)

    routes = [
        Route("/", page), Route("/jobs/{job}", page), Route("/compare", page),
        Route("/api/jobs", jobs), Route("/api/jobs/stream", jobs_stream),
        Route("/api/jobs/{job}", job), Route("/api/jobs/{job}/config", job_config),
        Route("/api/jobs/{job}/logs", logs), Route("/api/jobs/{job}/events", job_events),
        Route("/api/jobs/{job}/cancel", cancel, methods=["POST"]),
        Route("/api/jobs/{job}/fetch", fetch, methods=["POST"]),
        Route("/api/compare", compare),
        Route("/pipelines", page), Route("/pipelines/{run}", page),
        Route("/api/pipelines", pipelines), Route("/api/pipelines/stream", pipelines_stream),
        Route("/api/pipelines/{run}", pipeline), Route("/api/pipelines/{run}/stream", pipeline_stream),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.hub = hub
    return TokenGuard(app, token, hosts)
