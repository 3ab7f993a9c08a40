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
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from http.cookies import SimpleCookie
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from launcher.errors import AlaunchError, InputError
from launcher.ops import registry as reg
from launcher.ui import data
from launcher.ui.grep import Grep
from launcher.ui.hub import Frame, Hub, JobWatch

COOKIE = "alaunch_token"  # + "_<port>": see cookie_name
HEADER = "x-alaunch-token"
LIST_LIMIT = 200
LIST_PAGE = 100  # jobs per page of the list (at most LIST_LIMIT)
LIST_WATCHED = 20  # newest running jobs of a page whose logs the list reads (last loss, progress)
LIST_PUSH_S = 1.0
HEARTBEAT_S = 15.0
COMPARE_MAX = 8
STATIC = Path(str(resources.files("launcher.ui") / "static"))


def new_token() -> str:
    return secrets.token_urlsafe(24)


def cookie_name(hosts: set[str]) -> str:
    """The token cookie's name, per port: cookies are scoped by host, not port, so two
    dashboards on one machine (two users, or two state dirs) overwrote each other's cookie
    and each then answered the other's tabs with 401."""
    ports = sorted({h.rsplit(":", 1)[-1] for h in hosts if ":" in h})
    return f"{COOKIE}_{ports[0]}" if len(ports) == 1 and ports[0].isdigit() else COOKIE


class TokenGuard:
    """ASGI middleware: the token, the Host check and the POST rules above."""

    def __init__(self, app, token: str, hosts: set[str]):
        self.app, self.token, self.hosts = app, token, {h.lower() for h in hosts}
        self.cookie = cookie_name(self.hosts)

    def _ok(self, candidate: str | None) -> bool:
        return candidate is not None and candidate != "" and secrets.compare_digest(candidate.encode(),
                                                                                    self.token.encode())

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
        from_cookie = cookie[self.cookie].value if self.cookie in cookie else None
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
            response.set_cookie(self.cookie, self.token, httponly=True, samesite="strict", path="/")
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def allowed_hosts(host: str, port: int) -> set[str]:
    names = {"127.0.0.1", "localhost", "[::1]", host if ":" not in host else f"[{host}]"}
    return {f"{n}:{port}" for n in names}


def _error(exc: AlaunchError, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status)


def _sse(message: dict | str) -> bytes:
    if isinstance(message, Frame):
        return message.sse  # encoded once for every viewer, on the follower's thread
    text = message if isinstance(message, str) else json.dumps(message, default=str)
    return f"data: {text}\n\n".encode()


Message = dict | str | None  # None: a tick of the source passed with nothing new


def event_stream(request: Request, source: AsyncIterator[Message], tick: float) -> StreamingResponse:
    """The one server-sent-events response: every message ``source`` yields is sent as a
    ``data:`` event; a ``None`` from it means ``tick`` seconds passed with nothing new — then the
    client is looked at (gone: stop) and, after HEARTBEAT_S without a message, a comment is sent
    (a proxy or the browser would drop an idle stream). The source is closed whatever ends the
    stream, so a subscription it holds is released when the browser goes away."""
    async def gen():
        quiet = 0.0
        try:
            async for message in source:
                if message is not None:
                    quiet = 0.0
                    yield _sse(message)
                    continue
                if await request.is_disconnected():
                    return
                quiet += tick
                if quiet >= HEARTBEAT_S:
                    quiet = 0.0
                    yield b": beat\n\n"
        finally:
            await source.aclose()
    return StreamingResponse(gen(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


def _encode(value: Any) -> bytes:
    return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":")).encode()


def _now() -> dict:
    """The server's clock, beside a pushed list: the browser counts ages from it."""
    return {"now": time.time()}


async def polled(read: Callable[[], Any], stamp: Callable[[], dict] | None = None) -> AsyncIterator[Message]:
    """What to read: ``read()`` (in a worker thread, encoded there too: a big answer encoded on
    the event loop held every page up) every LIST_PUSH_S; how to diff: its JSON text against the
    last one sent — only a change is yielded, with ``stamp()``'s keys added (not diffed). The
    registry is the only source of the jobs list and of a pipeline's step states, written by
    other processes (`alaunch run`, `submit`), so it is looked at; a registry error is sent as
    an ``error`` message."""
    last = None

    def encoded() -> tuple[str, str]:
        value = read()
        text = json.dumps(value, default=str)
        return text, (json.dumps({**value, **stamp()}, default=str) if stamp is not None else text)
    while True:
        try:
            text, sent = await run_in_threadpool(encoded)
        except AlaunchError as exc:
            text = sent = json.dumps({"type": "error", "error": exc.message})
        if text != last:
            last = text
            yield sent
        await asyncio.sleep(LIST_PUSH_S)
        yield None


async def pushed(watch: JobWatch) -> AsyncIterator[Message]:
    """What to read: a job's follower's messages, pushed to a subscriber queue as lines arrive
    (no diff: each one is new), after a ``hello`` with the sequence number the browser already
    has; ends after a ``resync`` (a slow viewer's queue overflowed: the browser reconnects and
    reloads what it missed). Unsubscribes however it ends."""
    sub = watch.subscribe(asyncio.get_running_loop())
    try:
        yield {"type": "hello", "seq": watch.seq}
        while True:
            try:
                message = await asyncio.wait_for(sub.queue.get(), HEARTBEAT_S)
            except asyncio.TimeoutError:
                yield None
                continue
            yield message
            if message.get("type") == "resync":
                return
    finally:
        watch.unsubscribe(sub)


class Dashboard:
    """The route handlers over one hub (its followers and registry) and the runs directory;
    reading and shaping is in data.py, blocking work in a worker thread."""

    def __init__(self, hub: Hub, runs_dir: Path, token: str, top: Callable[[], dict] | None = None):
        self.hub, self.runs_dir, self.top_source = hub, Path(runs_dir), top
        self.grep = Grep()
        self._pages: dict[tuple, tuple[float, dict]] = {}
        self._pages_lock = threading.Lock()
        self.shell = (STATIC / "index.html").read_text(encoding="utf-8").replace("{{TOKEN}}", token)

    def page(self, request: Request) -> HTMLResponse:
        return HTMLResponse(self.shell,
                            headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                     "Referrer-Policy": "no-referrer",
                                     "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                                                "img-src 'self' data:; frame-ancestors 'none'"})

    def _record(self, ref: str) -> reg.JobRecord:
        with self.hub.registry() as registry:
            return registry.get(ref)

    # ------------------------------------------------------------------ top
    def _top(self) -> dict:
        """``alaunch top --json``'s snapshot (the surveyor asks the hosts at most once per its
        interval, whatever the number of browsers), or why there is none."""
        if self.top_source is None:
            return {"hosts": None, "error": "no hosts: start the dashboard with -H HOSTFILE to see their cards"}
        return self.top_source()

    async def top(self, request: Request) -> Response:
        return await self._json(self._top)

    async def top_stream(self, request: Request) -> Response:
        return event_stream(request, polled(lambda: {"type": "top", **self._top()}), LIST_PUSH_S)

    # ------------------------------------------------------------------ jobs
    def _page(self, params: Mapping[str, str]) -> dict:
        """One page of the jobs list, filtered and counted in SQL (``Registry.page``: every job
        findable among 10,000; the page used to filter the newest 200 itself). Only a running job
        among the newest LIST_WATCHED on the page is followed for its progress; a finished job
        shows what a watch already holds and is never followed just to be listed (one big recent
        job pinned a core for a list). No ``age_s``: the browser counts ages from ``created_at``,
        so a pushed list changes when a job does, not every second."""
        states, text, offset, limit = data.list_query(params, LIST_PAGE)
        with self.hub.registry() as registry:
            records, total = registry.page(limit, offset, states, text)
        rows = []
        for i, r in enumerate(records):
            w = self.hub.watch(r.id) if i < LIST_WATCHED and r.nodes and not r.terminal else self.hub.get(r.id)
            row = data.job_row(r, w.snapshot(curves=False) if w else None)
            row.pop("age_s")
            rows.append(row)
        return {"jobs": rows, "total": total, "offset": offset, "limit": limit}

    async def jobs(self, request: Request) -> Response:
        """The page's rows as a JSON list; how many match in all in ``X-Total-Count``."""
        params = dict(request.query_params)

        def read() -> tuple[bytes, int]:
            page = self._page(params)
            return _encode(page["jobs"]), page["total"]
        try:
            body, total = await run_in_threadpool(read)
        except AlaunchError as exc:
            return _error(exc)
        return Response(body, media_type="application/json", headers={"X-Total-Count": str(total)})

    def _shared_page(self, params: Mapping[str, str]) -> dict:
        """:meth:`_page`, read at most once per LIST_PUSH_S for every stream with the same query
        (20 open lists at 10,000 jobs each ran the page's SQL every second)."""
        key = tuple(sorted(params.items()))
        now = time.monotonic()
        with self._pages_lock:
            hit = self._pages.get(key)
            if hit is not None and now - hit[0] < LIST_PUSH_S * 0.9:
                return hit[1]
        page = self._page(params)
        with self._pages_lock:
            self._pages = {k: v for k, v in self._pages.items() if now - v[0] < LIST_PUSH_S}
            self._pages[key] = (now, page)
        return page

    async def jobs_stream(self, request: Request) -> Response:
        params = dict(request.query_params)
        return event_stream(request, polled(lambda: {"type": "jobs", **self._shared_page(params)}, stamp=_now),
                            LIST_PUSH_S)

    def _detail(self, ref: str, points: int = data.CURVE_POINTS) -> dict:
        record = self._record(ref)
        w = self.hub.watch(record.id) if record.nodes else None
        return data.job_detail(record, w.snapshot(curves=points) if w else None, points=points) | {
            "telemetry": data.telemetry_field(self.hub.state_dir, record.id)}

    def _curves(self, ref: str, points: int, lo: float | None, hi: float | None) -> dict:
        """The loss curves between two steps (a zoomed chart), ``points`` buckets each: at full
        resolution once the range holds fewer than ``2 * points`` points."""
        w = self.hub.watch(self._record(ref).id)
        return {"curves": data.curves_dict(w.downsampled(points, lo, hi), buckets=None)}

    @staticmethod
    def _points(request: Request) -> int:
        try:
            return max(10, min(20_000, int(request.query_params.get("points") or data.CURVE_POINTS)))
        except ValueError:
            raise InputError("points is a whole number (buckets of the chart, about its width in pixels)",
                             key="points") from None

    @staticmethod
    async def _json(read: Callable[..., Any], *args: Any) -> Response:
        """``read(*args)`` in a worker thread as JSON; an unknown job or run is 404, another
        refusal the error's own answer."""
        try:
            body = await run_in_threadpool(lambda: _encode(read(*args)))  # encoded off the event loop
            return Response(body, media_type="application/json")
        except InputError as exc:
            return _error(exc, 404)
        except AlaunchError as exc:
            return _error(exc)

    async def job(self, request: Request) -> Response:
        try:
            points = self._points(request)
        except InputError as exc:
            return _error(exc)
        return await self._json(self._detail, request.path_params["job"], points)

    async def curves(self, request: Request) -> Response:
        q = request.query_params
        try:
            points = self._points(request)
            lo = float(q["from"]) if q.get("from") not in (None, "") else None
            hi = float(q["to"]) if q.get("to") not in (None, "") else None
        except InputError as exc:
            return _error(exc)
        except ValueError:
            return JSONResponse({"error": "from and to are steps (numbers)"}, 400)
        return await self._json(self._curves, request.path_params["job"], points, lo, hi)

    async def job_config(self, request: Request) -> Response:
        try:
            record = self._record(request.path_params["job"])
        except InputError as exc:
            return _error(exc, 404)
        return PlainTextResponse(record.config_text)

    async def logs(self, request: Request) -> Response:
        q = request.query_params
        try:
            rank = int(q["rank"]) if q.get("rank") not in (None, "") else None
            after = int(q.get("after") or -1)
            limit = max(1, min(20_000, int(q.get("limit") or 2000)))
        except ValueError:
            return JSONResponse({"error": "rank, after and limit are integers"}, 400)
        pattern = q.get("grep") or None

        def read() -> bytes:  # sqlite and the user's regex run in a worker thread, never on the loop
            record = self._record(request.path_params["job"])
            w = self.hub.watch(record.id)
            note = None
            if pattern and any(n.job_dir for n in record.nodes):
                Grep.check(pattern)
                try:
                    found = self._grep_hosts(record, pattern, rank, limit)
                    return _encode({"lines": data.log_filter(found, node=q.get("node") or None, limit=limit),
                                    "seq": w.seq, "whole_log": True})
                except AlaunchError as exc:
                    note = (f"grep on the hosts failed ({exc.message}); the matching lines among the last "
                            "lines held here instead")
            lines = data.log_filter(w.lines_since(-1), rank=rank, node=q.get("node") or None,
                                    after=after, limit=None if pattern else limit)
            if pattern:
                lines = [lines[i] for i in self.grep.matching(pattern, [ln["text"] for ln in lines])][-limit:]
            return _encode({"lines": lines, "seq": w.seq, "whole_log": False, "note": note})
        try:
            return Response(await run_in_threadpool(read), media_type="application/json")
        except InputError as exc:
            return _error(exc, 404 if exc.key != "grep" else 400)

    def _grep_hosts(self, record: reg.JobRecord, pattern: str, rank: int | None, limit: int) -> list[dict]:
        """``pattern`` over the whole of the job's logs, on its hosts (``ops.follow.grep_job``)."""
        from launcher.core.hostfile import parse_hostfile
        from launcher.ops.engines import log_view
        from launcher.ops.follow import grep_job
        with self.hub.registry() as registry:
            conn = self.hub.connect(registry, self.hub.state_dir, record)
        view = log_view(record)
        hosts = {h.name: h for h in parse_hostfile(view.hostfile_text, f"registry:{record.id}")}
        found = grep_job(view, conn.runner_for, hosts, pattern, limit=limit, rank=rank)
        return [{"seq": 0, **ln} for ln in found]

    async def job_events(self, request: Request) -> Response:
        try:
            record = self._record(request.path_params["job"])
        except InputError as exc:
            return _error(exc, 404)
        return event_stream(request, pushed(self.hub.watch(record.id)), HEARTBEAT_S)

    # ------------------------------------------------------------------ predictions
    def _eval_pairs_from_watch(self, record: reg.JobRecord) -> tuple[list, str | None]:
        """An eval job not fetched: the ``pred is:`` / ``label is:`` pairs of its lowest rank's
        lines the follower holds (the last MAX_LINES of them); a batch cut at the buffer's start
        or still being written is left out."""
        from launcher.metrics import predictions as pr
        w = self.hub.watch(record.id)
        if record.terminal:
            w.done.wait(10)
        lines = [ln for ln in w.lines_since(-1) if ln.get("rank") is not None and ln.get("role") != "msrun"]
        if not lines:
            return [], None
        lowest = min(ln["rank"] for ln in lines)
        text = "\n".join(ln["text"] for ln in lines if ln["rank"] == lowest)
        if not pr.looks_like_eval_log(text):
            return [], None
        source = f"rank {lowest}'s log as followed here"
        try:
            return pr.parse_eval_log(text, source), source
        except InputError:  # the first or last batch is cut: the whole ones before it
            head = text[:text.rfind(pr.PRED_MARK)]
            try:
                return pr.parse_eval_log(head, source), source
            except InputError:
                return [], source

    def _predictions(self, ref: str, q: str | None, limit: int) -> dict:
        """A predict or eval job's predictions, first ``limit`` matching ``q``, and its score:
        from the fetched run (``text_generation_result.txt``, else an eval log's pairs;
        ``scores.json`` as ``score --save`` wrote it), else an eval job's pairs from its log as
        followed here (EM/F1 computed from them as ``score squad`` does)."""
        from launcher.metrics import predictions as pr
        from launcher.metrics import squad
        from launcher.metrics.runfacts import collect
        record = self._record(ref)
        run_dir = self.runs_dir / record.id
        texts: list[str] = []
        pairs: list = []
        source = error = None
        try:
            if run_dir.is_dir():
                generated = sorted(run_dir.rglob("text_generation_result*.txt"))
                if generated:
                    source = str(generated[0])
                    texts = pr.parse_generation_result(pr.read_text(generated[0]), source)
                else:
                    for path in sorted(run_dir.rglob("*.log")):
                        text = pr.read_text(path)
                        if pr.looks_like_eval_log(text):
                            source = str(path)
                            pairs = pr.parse_eval_log(text, source)
                            break
            if not texts and not pairs and record.nodes and record.kind == "eval":
                pairs, source = self._eval_pairs_from_watch(record)
        except InputError as exc:
            error = exc.message
        items = ([{"i": i + 1, "prediction": t} for i, t in enumerate(texts)] if texts else
                 [{"i": i + 1, "prediction": p.prediction, "reference": p.reference, "line": p.line}
                  for i, p in enumerate(pairs)])
        score = None
        if pairs:
            sq = squad.score((p.prediction, p.reference) for p in pairs)
            score = {"em": sq.em, "f1": sq.f1, "count": sq.count}
        hint = None
        if not items and error is None:
            hint = ("fetch the job (fetch logs) to read its predictions" if not run_dir.is_dir() else
                    f"no text_generation_result.txt or eval log with `{pr.PRED_MARK}` lines in {run_dir}")
        saved = data.scores_dict(collect(run_dir)) if run_dir.is_dir() else None
        return {"kind": record.kind, "source": source, **data.predictions_page(items, q, limit),
                "score": score, "scores": saved, "hint": hint, "error": error}

    async def predictions(self, request: Request) -> Response:
        q = request.query_params
        try:
            limit = max(1, min(1000, int(q.get("limit") or data.PREDICTIONS_SHOWN)))
        except ValueError:
            return JSONResponse({"error": "limit is a whole number"}, 400)
        return await self._json(self._predictions, request.path_params["job"], q.get("q"), limit)

    # ------------------------------------------------------------------ actions
    async def cancel(self, request: Request) -> Response:
        def run() -> dict:
            with self.hub.registry() as registry:
                record = registry.get(request.path_params["job"])
                service = self.hub.connect(registry, self.hub.state_dir, record).service
                record, outcome = service.cancel(record.id, grace=5.0)
                return {"id": record.id, "state": record.state, "outcome": outcome}
        try:
            return JSONResponse(await run_in_threadpool(run))
        except AlaunchError as exc:
            return _error(exc, 409 if isinstance(exc, InputError) else 500)

    async def fetch(self, request: Request) -> Response:
        what = request.query_params.get("what") or "logs"

        def run() -> dict:
            from launcher.ops.collect import FetchError, fetch_job
            with self.hub.registry() as registry:
                record = registry.get(request.path_params["job"])
                try:
                    report = fetch_job(registry, record.id, what, self.runs_dir, self.hub.state_dir)
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
    def _pipeline_rows(self) -> list[dict]:
        with self.hub.registry() as registry:
            return [data.pipeline_row(run) for run in registry.pipelines(limit=LIST_LIMIT)]

    def _pipeline_detail(self, ref: str) -> dict:
        """A run from the registry, its steps' needs from its pipeline file (I/O here, parsing in
        data.py), each step's job as the jobs list shows it (a running one's progress from its
        follower) and the jobs its attempts submitted (among the newest LIST_LIMIT jobs)."""
        with self.hub.registry() as registry:
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
            w = self.hub.watch(r.id) if (r.nodes and not r.terminal) else self.hub.get(r.id)
            rows[job_id] = data.job_row(r, w.snapshot(curves=False) if w else None)
        return data.pipeline_detail(run, needs, rows, [r for r in recent if r.meta.get("pipeline") == run.id])

    async def pipelines(self, request: Request) -> Response:
        try:
            return JSONResponse(await run_in_threadpool(self._pipeline_rows))
        except AlaunchError as exc:
            return _error(exc)

    async def pipelines_stream(self, request: Request) -> Response:
        return event_stream(request, polled(lambda: {"type": "pipelines", "pipelines": self._pipeline_rows()}),
                            LIST_PUSH_S)

    async def pipeline(self, request: Request) -> Response:
        return await self._json(self._pipeline_detail, request.path_params["run"])

    async def pipeline_stream(self, request: Request) -> Response:
        ref = request.path_params["run"]
        return event_stream(request, polled(lambda: {"type": "pipeline", "pipeline": self._pipeline_detail(ref)}),
                            LIST_PUSH_S)

    # ------------------------------------------------------------------ the sweeps list
    def _sweep_rows(self) -> list[dict]:
        with self.hub.registry() as registry:
            return [data.sweep_row(record) for record in registry.sweeps(limit=LIST_LIMIT)]

    async def sweeps(self, request: Request) -> Response:
        return await self._json(self._sweep_rows)

    async def sweeps_stream(self, request: Request) -> Response:
        return event_stream(request, polled(lambda: {"type": "sweeps", "sweeps": self._sweep_rows()}), LIST_PUSH_S)

    # ------------------------------------------------------------------ sweeps
    def _sweep_detail(self, ref: str) -> dict:
        with self.hub.registry() as registry:
            return data.sweep_detail(registry.sweep(ref))

    async def sweep(self, request: Request) -> Response:
        return await self._json(self._sweep_detail, request.path_params["sweep"])

    async def sweep_stream(self, request: Request) -> Response:
        ref = request.path_params["sweep"]
        return event_stream(request, polled(lambda: {"type": "sweep", "sweep": self._sweep_detail(ref)}), LIST_PUSH_S)

    # ------------------------------------------------------------------ compare
    async def compare(self, request: Request) -> Response:
        ids = [i for part in request.query_params.getlist("ids") for i in part.split(",") if i.strip()]
        if not 2 <= len(ids) <= COMPARE_MAX:
            return JSONResponse({"error": f"compare takes 2 to {COMPARE_MAX} jobs (ids=a,b), got {len(ids)}"}, 400)

        def run() -> dict:
            from launcher.metrics.runfacts import collect
            with self.hub.registry() as registry:
                records = [registry.get(i) for i in ids]
            watches = [self.hub.watch(r.id) for r in records]
            for r, w in zip(records, watches, strict=True):
                if r.terminal:
                    w.done.wait(30)  # a finished job's logs are read once, in full
            runs_dir = self.runs_dir
            facts = [collect(runs_dir / r.id) if (runs_dir / r.id).is_dir() else None for r in records]
            return data.compare(records, [w.snapshot() for w in watches], facts)
        return await self._json(run)


def create_app(state_dir: Path, token: str, hosts: set[str], runs_dir: Path = Path("runs"),
               hub: Hub | None = None, top: Callable[[], dict] | None = None) -> Any:
    """The ASGI app: Starlette routes to :class:`Dashboard`'s handlers, behind :class:`TokenGuard`.
    ``top``: the hosts' cards (``ops.cards.Surveyor.snapshot``, ``alaunch ui -H HOSTFILE``)."""
    hub = hub or Hub(state_dir)
    d = Dashboard(hub, runs_dir, token, top)
    routes = [
        Route("/", d.page), Route("/jobs/{job}", d.page), Route("/compare", d.page),
        Route("/api/jobs", d.jobs), Route("/api/jobs/stream", d.jobs_stream),
        Route("/api/jobs/{job}", d.job), Route("/api/jobs/{job}/config", d.job_config),
        Route("/api/jobs/{job}/logs", d.logs), Route("/api/jobs/{job}/curves", d.curves),
        Route("/api/jobs/{job}/events", d.job_events), Route("/api/jobs/{job}/predictions", d.predictions),
        Route("/api/jobs/{job}/cancel", d.cancel, methods=["POST"]),
        Route("/api/jobs/{job}/fetch", d.fetch, methods=["POST"]),
        Route("/api/compare", d.compare),
        Route("/pipelines", d.page), Route("/pipelines/{run}", d.page),
        Route("/top", d.page), Route("/api/top", d.top), Route("/api/top/stream", d.top_stream),
        Route("/api/pipelines", d.pipelines), Route("/api/pipelines/stream", d.pipelines_stream),
        Route("/api/pipelines/{run}", d.pipeline), Route("/api/pipelines/{run}/stream", d.pipeline_stream),
        Route("/sweeps", d.page), Route("/api/sweeps", d.sweeps),  # before /api/sweeps/{sweep}: "stream" is no sweep
        Route("/api/sweeps/stream", d.sweeps_stream),
        Route("/sweeps/{sweep}", d.page), Route("/api/sweeps/{sweep}", d.sweep),
        Route("/api/sweeps/{sweep}/stream", d.sweep_stream),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.hub = hub
    return TokenGuard(app, token, hosts)
