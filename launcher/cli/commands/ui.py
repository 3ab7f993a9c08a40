"""`alaunch ui`: serve the local web dashboard (jobs, live loss curves, logs, cancel, compare;
with ``-H HOSTFILE`` also every host's cards, as ``alaunch top``, on ``/top``).

The first line printed is the URL with its access token (as Jupyter does); the server binds
loopback unless ``--host`` says otherwise. Needs the ``ui`` extra (starlette, uvicorn).
"""

from __future__ import annotations

import errno
import os
import socket
import webbrowser
from pathlib import Path

import typer

from launcher.cli import environment
from launcher.cli.options import AcceptNewOpt, HostfileOpt, KnownHostsOpt, SshConfigOpt
from launcher.errors import AlaunchError, InputError

ORDER = 90
DEFAULT_PORT = 8642


def bind(host: str, port: int, *, fallback: bool) -> socket.socket:
    """A listening socket; the default port falls back to a free one when taken."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InputError(f"cannot resolve {host!r} ({exc.strerror}); e.g. --host 127.0.0.1", key="--host") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE and fallback:
            sock.bind((address[0], 0) + tuple(address[2:]))
        else:
            sock.close()
            raise InputError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port",
                             key="--port") from None
    sock.listen(64)
    sock.setblocking(False)
    return sock


def browser_file(url: str, state_dir: Path, port: int) -> Path:
    """A private (0600) HTML file that sends the browser to ``url``: what the browser is given
    instead of the URL, as Jupyter does. A URL given to ``webbrowser.open`` becomes a command
    line (xdg-open, the browser's own argv) that every local user can read in /proc, token
    included; a file in the private state dir cannot be read by them."""
    directory = Path(state_dir) / "ui"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"open-{port}.html"
    quoted = url.replace("&", "&amp;").replace('"', "&quot;")
    text = (f'<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="0;url={quoted}">'
            f'<title>alaunch ui</title><p><a href="{quoted}">Open the alaunch dashboard</a></p>\n')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(text)
    return path


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def register(app: typer.Typer) -> None:
    @app.command("ui", help="Serve the local web dashboard; prints its URL (with the access token) first.")
    def ui_cmd(
        port: int = typer.Option(DEFAULT_PORT, "--port", help="Port (0: any free one; the default falls back "
                                                              "to a free one when taken)."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
        no_browser: bool = typer.Option(False, "--no-browser", help="Do not open a browser."),
        runs: Path = typer.Option(Path("runs"), "--runs", help="Where fetched runs go (and their scores are read)."),
        token: str | None = typer.Option(None, "--token", envvar="ALAUNCH_UI_TOKEN",
                                            help="Use this access token instead of a random one."),
        hostfile: HostfileOpt = None, known_hosts: KnownHostsOpt = None, ssh_config: SshConfigOpt = None,
        accept_new: AcceptNewOpt = False,
        bin_dir: str | None = typer.Option(None, "--bin-dir", envvar="ALAUNCH_REMOTE_BIN_DIR",
                                           help="Directory with python on the hosts (for the cards page)."),
    ) -> None:
        try:
            import uvicorn

            from launcher.ui.server import allowed_hosts, create_app, new_token
        except ImportError as exc:
            raise AlaunchError(f"alaunch ui needs the ui extra ({exc.name} is missing): "
                               "pip install 'alaunch[ui]'") from None
        if not 0 <= port <= 65535:
            raise InputError(f"port {port} is not in 0..65535", key="--port")
        if token is not None and len(token) < 16:
            raise InputError("the token must have at least 16 characters", key="--token")
        env = environment.current()
        sock = bind(host, port, fallback=port == DEFAULT_PORT)
        bound = sock.getsockname()[1]
        token = token or new_token()
        url = f"http://{url_host(host)}:{bound}/?token={token}"
        source = None
        if hostfile is not None:  # the cards page: the hosts asked at most every 2 s, whoever looks
            from launcher.cli.connect import runner_factory
            from launcher.ops.engines import engine_for, read_target
            target = read_target(hostfile)
            source = engine_for(target, None, env.state_dir, exec_factory=runner_factory(
                known_hosts, ssh_config, accept_new)).top_source(target, bin_dir=bin_dir)
        app_ = create_app(env.state_dir, token, allowed_hosts(host, bound), runs_dir=runs,
                          top=source.snapshot if source else None)
        env.stdout.file.write(url + "\n")
        env.stdout.file.flush()
        if host not in ("127.0.0.1", "localhost", "::1"):
            env.stderr.print(f"alaunch ui: listening on {host}, not loopback: anyone who can reach it "
                             "and has the token can cancel jobs", markup=False)
        opener = None
        if not no_browser:
            opener = browser_file(url, env.state_dir, bound)
            webbrowser.open(opener.as_uri())
        config = uvicorn.Config(app_, log_level="warning", timeout_graceful_shutdown=2, lifespan="off")
        try:
            uvicorn.Server(config).run(sockets=[sock])
        finally:
            if source is not None:
                source.close()
            if opener is not None:
                opener.unlink(missing_ok=True)
