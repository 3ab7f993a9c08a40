"""Hostfiles: DeepSpeed's ``hostname slots=N`` format plus ``user= port= identity= workdir=
addr= env_scripts=``.

Reading a file (:func:`read_hostfile`) is split from parsing its text (:func:`parse_hostfile`),
and the ``--include`` / ``--exclude`` resource filter (:func:`apply_filters`) is a pure
function over hosts, as DeepSpeed's runner does it. Every bad input is one
:class:`~launcher.errors.InputError` naming ``file:line`` (or the option) and what would be
valid, because a hostfile is the first thing a user writes and the last thing they should
have to debug.

Format (one host per line)::

    # comment
    worker-0 slots=8                        # trailing comment
    worker-1 slots=8 user=ma port=2222 identity=~/.ssh/id_ed25519 workdir=/srv/alaunch
    fe80::1 slots=2                         # IPv6 addresses are written bare
    login-3 slots=8 addr=192.168.10.3       # the other nodes reach it at addr (RoCE/cluster NIC)
    ascend-2 slots=8 env_scripts=/usr/local/Ascend/ascend-toolkit/set_env.sh,/usr/local/Ascend/nnal/atb/set_env.sh

``addr`` is the address the *other nodes* use to reach this host (msrun's ``--master_addr``
when it is node 0), when that is not the SSH name (NAT, a jump host, a cluster network).
``env_scripts`` lists scripts sourced in order before msrun starts (default: the usual CANN
``set_env.sh`` locations that exist; ``env_scripts=none`` sources nothing); a script that
fails stops the node with its stderr.
    "my alias" is not allowed: host names are letters, digits, . - _ : only

Values may be quoted shell-style (``workdir="/srv/my jobs"``); a ``#`` starts a comment
only at the start of a line or after whitespace, so ``workdir=/srv/a#b`` is literal.
"""

from __future__ import annotations

import difflib
import re
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

from launcher.errors import InputError

LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
DEFAULT_WORKDIR = "~"  # jobs live in <workdir>/alaunch/<job-id>, so ~/alaunch/<job-id> by default

KEYS = ("slots", "user", "port", "identity", "workdir", "addr", "env_scripts")
MAX_HOSTFILE_BYTES = 1 << 20
MAX_SLOTS = 1024  # far above any real node; stops slots=10**12 from allocating slot ids  # a hostfile is a short text file; refuse anything bigger

# Strict on purpose: a host name ends up in ssh argv, logs and remote paths. No shell
# metacharacters, no whitespace, no leading '-' (it would read as an ssh option).
_HOST_RE = re.compile(r"(?!.*\.\.)[A-Za-z0-9_:][A-Za-z0-9_.:-]{0,252}")
_USER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_SLOT_LIST_RE = re.compile(r"\d+(,\d+)*")
_VALID_HOST = ("letters, digits, '.', '-', '_' and ':' (IPv6), not starting with '-' or '.', "
               "no '..'")


@dataclass(frozen=True)
class Host:
    """One node: where to reach it and which device slots a job may use there."""

    name: str  # hostname, address or ~/.ssh/config alias, as written in the hostfile
    slots: int  # number of device slots (NPUs) on this host
    user: str | None = None
    port: int | None = None
    identity: str | None = None  # private key file
    workdir: str | None = None  # remote base directory for jobs (default DEFAULT_WORKDIR)
    source: str | None = None  # hostfile path this came from (for error messages)
    line: int | None = None  # line in that file
    # The device ids a job uses on this host, after --include/--exclude (default: all slots).
    slot_ids: tuple[int, ...] = field(default=())
    addr: str | None = None  # how the other nodes reach this host (default: its ssh HostName)
    env_scripts: tuple[str, ...] | None = None  # sourced in order before msrun; None: the CANN defaults

    def __post_init__(self) -> None:
        if not self.slot_ids:
            object.__setattr__(self, "slot_ids", tuple(range(self.slots)))

    @property
    def is_local(self) -> bool:
        """``localhost`` runs on this machine without SSH (through the same plan)."""
        return self.name in LOCAL_NAMES and self.port is None and self.user is None

    @property
    def remote_workdir(self) -> str:
        return self.workdir or DEFAULT_WORKDIR

    @property
    def workers(self) -> int:
        """Processes to start here: the slots left after filters (``slots`` is the capacity)."""
        return len(self.slot_ids)


# --------------------------------------------------------------------------- parsing

def _strip_comment(line: str) -> str:
    """Drop an unquoted ``#`` comment that starts the line or follows whitespace.

    shlex's own comment handling also cuts ``a#b`` in the middle of a word, which would
    silently truncate a workdir; this keeps such a ``#`` literal.
    """
    quote: str | None = None
    prev = " "
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and prev.isspace():
            return line[:i]
        prev = ch
    return line


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_host_name(name: str, *, source: str | None = None, line: int | None = None,
                    key: str | None = None) -> str:
    """Return ``name`` if it is a safe host name, else raise naming what is valid."""
    if not _HOST_RE.fullmatch(name):
        raise InputError(f"invalid host name {name!r}: use {_VALID_HOST}",
                         source=source, line=line, key=key)
    return name


class _LineParser:
    """Turns one non-blank hostfile line into a :class:`Host` (one job: one line)."""

    def __init__(self, source: str, lineno: int):
        self.source = source
        self.lineno = lineno

    def error(self, message: str) -> InputError:
        return InputError(message, source=self.source, line=self.lineno)

    def parse(self, text: str) -> Host:
        if any(ord(c) < 32 and c != "\t" for c in text):
            raise self.error("control character in line; a hostfile is plain text")
        try:
            tokens = shlex.split(text, comments=False, posix=True)
        except ValueError as exc:  # unbalanced quotes
            raise self.error(f"cannot split line ({exc}); quote values as in a shell") from None
        name, *pairs = tokens
        if "=" in name:
            raise self.error(f"line starts with {name!r}; expected 'HOSTNAME slots=N ...'")
        check_host_name(name, source=self.source, line=self.lineno)
        values: dict[str, str] = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep:
                hint = f"slots={pair}" if pair.isdigit() else "slots=8"
                raise self.error(f"expected key=value after the host name, got {pair!r} "
                                 f"(e.g. '{hint}'); keys: {', '.join(KEYS)}")
            if key not in KEYS:
                raise self.error(f"unknown key {key!r}{_suggest(key, KEYS)}; "
                                 f"valid keys: {', '.join(KEYS)}")
            if key in values:
                raise self.error(f"key {key!r} given twice for host {name!r}")
            if value == "":
                raise self.error(f"empty value for {key!r}")
            values[key] = value
        if "slots" not in values:
            raise self.error(f"missing slots=N for host {name!r} (N = number of NPUs to use, >= 1)")
        return Host(
            name=name,
            slots=self._slots(values["slots"]),
            user=self._user(values.get("user")),
            port=self._port(values.get("port")),
            identity=self._path("identity", values.get("identity")),
            workdir=self._workdir(values.get("workdir")),
            addr=self._addr(values.get("addr")),
            env_scripts=self._env_scripts(values.get("env_scripts")),
            source=self.source,
            line=self.lineno,
        )

    def _slots(self, raw: str) -> int:
        if not raw.isdigit() or not raw.isascii():
            raise self.error(f"slots must be an integer >= 1, got {raw!r}")
        slots = int(raw)
        if slots < 1:
            raise self.error(f"slots must be an integer >= 1, got {slots}")
        if slots > MAX_SLOTS:
            raise self.error(f"slots must be at most {MAX_SLOTS}, got {slots}")
        return slots

    def _port(self, raw: str | None) -> int | None:
        if raw is None:
            return None
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 65535:
            raise self.error(f"port must be an integer from 1 to 65535, got {raw!r}")
        return int(raw)

    def _user(self, raw: str | None) -> str | None:
        if raw is not None and not _USER_RE.fullmatch(raw):
            raise self.error(f"invalid user {raw!r}: use letters, digits, '_', '.', '-', "
                             "starting with a letter or '_'")
        return raw

    def _path(self, key: str, raw: str | None) -> str | None:
        if raw is not None and raw.startswith("-"):
            raise self.error(f"{key} must not start with '-', got {raw!r}")
        return raw

    def _addr(self, raw: str | None) -> str | None:
        if raw is not None and not _HOST_RE.fullmatch(raw):
            raise self.error(f"invalid addr {raw!r}: an address or name the other nodes reach, "
                             f"using {_VALID_HOST}")
        return raw

    def _env_scripts(self, raw: str | None) -> tuple[str, ...] | None:
        if raw is None:
            return None
        if raw == "none":
            return ()
        scripts = tuple(raw.split(","))
        for s in scripts:
            if not (s.startswith("/") or s.startswith("~/")):
                raise self.error(f"env_scripts entry {s!r} must be an absolute path or start with '~/' "
                                 "(comma-separated, in the order to source; or 'none')")
        return scripts

    def _workdir(self, raw: str | None) -> str | None:
        if raw is None:
            return None
        if not (raw.startswith("/") or raw == "~" or raw.startswith("~/")):
            raise self.error(f"workdir must be absolute or start with '~/', got {raw!r}")
        if ".." in raw.split("/"):
            raise self.error(f"workdir must not contain '..', got {raw!r}")
        return raw


def parse_hostfile(text: str, source: str = "<hostfile>") -> list[Host]:
    """Parse hostfile text into hosts, in file order (node rank follows this order)."""
    hosts: list[Host] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        body = _strip_comment(raw).strip()
        if not body:
            continue
        host = _LineParser(source, lineno).parse(body)
        if host.name in seen:
            raise InputError(f"duplicate host {host.name!r} (first on line {seen[host.name]}); "
                             "list each host once with its total slots",
                             source=source, line=lineno)
        seen[host.name] = lineno
        hosts.append(host)
    if not hosts:
        raise InputError("no hosts in hostfile; expected lines like 'worker-0 slots=8'",
                         source=source)
    return hosts


def read_hostfile(path: str | Path) -> list[Host]:
    """Read and parse a hostfile; I/O problems become one clear line too."""
    return parse_hostfile(read_text(path), source=str(path))


def read_text(path: str | Path, what: str = "hostfile") -> str:
    """The text of a ``-H`` file, read ONCE (``-H <(grep ascend hostfiles/all)`` is a pipe: a
    second read finds it empty); a missing, unreadable, huge or non-UTF-8 file is one line."""
    source = str(path)
    p = Path(path).expanduser()
    try:
        if p.is_dir():
            raise InputError(f"is a directory, not a {what}", source=source)
        if p.is_file() and p.stat().st_size > MAX_HOSTFILE_BYTES:
            raise InputError(f"{what} is {p.stat().st_size} bytes; expected a short text file "
                             f"(at most {MAX_HOSTFILE_BYTES} bytes)", source=source)
        with p.open("rb") as fh:  # a pipe has no size: read one byte past the limit
            data = fh.read(MAX_HOSTFILE_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"{what} not found", source=source) from None
    except PermissionError:
        raise InputError(f"{what} not readable (permission denied)", source=source) from None
    if len(data) > MAX_HOSTFILE_BYTES:
        raise InputError(f"{what} is more than {MAX_HOSTFILE_BYTES} bytes; expected a short text file",
                         source=source)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"not UTF-8 text (byte 0x{data[exc.start]:02x}); save the {what} "
                         "as UTF-8", source=source, line=line) from None


def local_hosts(slots: int = 1) -> list[Host]:
    """The implicit hostfile of ``--local``: this machine, ``slots`` workers."""
    if slots < 1:
        raise InputError(f"slots must be an integer >= 1, got {slots}", key="--local")
    return [Host("localhost", slots, source="--local")]


def format_hostfile(hosts: Sequence[Host]) -> str:
    """Hosts back to hostfile text (parseable by :func:`parse_hostfile`), for snapshots.

    Filtered slot ids are written as a comment: they come from --include/--exclude, not
    from the hostfile format.
    """
    lines = []
    for h in hosts:
        parts = [h.name, f"slots={h.slots}"]
        for key in ("user", "port", "identity", "workdir", "addr"):
            value = getattr(h, key)
            if value is not None:
                parts.append(f"{key}={shlex.quote(str(value))}")
        if h.env_scripts is not None:
            parts.append("env_scripts=" + (shlex.quote(",".join(h.env_scripts)) if h.env_scripts else "none"))
        line = " ".join(parts)
        if h.slot_ids != tuple(range(h.slots)):
            line += f"  # uses slots {','.join(map(str, h.slot_ids))}"
        lines.append(line)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- filters

NODE_SEP = "@"
SLOT_LIST_START = ":"
SLOT_SEP = ","


def _parse_filter(spec: str, hosts: Sequence[Host], option: str) -> list[tuple[str, list[int] | None]]:
    """``NAME[:SLOT[,SLOT...]][@...]`` -> [(host, slots or None for all)], checked against hosts.

    An IPv6 host name contains ':' itself: a spec equal to a host's name means the whole
    host; otherwise the slot list follows the *last* ':'; ``[addr]:0,1`` also works.
    """
    by_name = {h.name: h for h in hosts}
    names = list(by_name)
    if not spec.strip():
        raise InputError("empty filter; expected NAME[:SLOT[,SLOT...]][@NAME...]", key=option)
    out: list[tuple[str, list[int] | None]] = []
    for node in spec.split(NODE_SEP):
        node = node.strip()
        if not node:
            raise InputError(f"empty host in {spec!r} (stray '@'); expected "
                             "NAME[:SLOT[,SLOT...]][@NAME...]", key=option)
        slot_text: str | None = None
        if node in by_name:
            name = node
        elif node.startswith("["):
            m = re.fullmatch(r"\[([^\]]+)\](?::(.*))?", node)
            if not m:
                raise InputError(f"malformed {node!r}; write an IPv6 host as [ADDR]:SLOTS",
                                 key=option)
            name, slot_text = m.group(1), m.group(2)
        elif SLOT_LIST_START in node:
            name, _, slot_text = node.rpartition(SLOT_LIST_START)
        else:
            name = node
        if name not in by_name:
            raise InputError(f"host {name!r} is not in the hostfile{_suggest(name, names)}; "
                             f"hosts: {', '.join(names)}", key=option)
        if slot_text is None:
            out.append((name, None))
            continue
        if not _SLOT_LIST_RE.fullmatch(slot_text):
            raise InputError(f"malformed slot list {slot_text!r} for host {name!r}; expected "
                             "comma-separated integers like 0,1", key=option)
        slots = [int(s) for s in slot_text.split(SLOT_SEP)]
        available = by_name[name].slot_ids
        for s in slots:
            if s not in available:
                raise InputError(f"slot {s} is not on host {name!r} "
                                 f"(its slots: {','.join(map(str, available))})", key=option)
        out.append((name, slots))
    return out


def _dedup(items: Iterable[int]) -> tuple[int, ...]:
    return tuple(dict.fromkeys(items))


def apply_filters(hosts: Sequence[Host], include: str | None = None,
                  exclude: str | None = None) -> list[Host]:
    """DeepSpeed's resource filter: keep (``include``) or drop (``exclude``) hosts or slots.

    ``include="worker-0@worker-1:0,2"`` uses all of worker-0 and slots 0 and 2 of worker-1;
    ``exclude="worker-1:0"`` uses everything but slot 0 of worker-1. The two are mutually
    exclusive. Hosts keep hostfile order (it decides node ranks); a host left with no slots
    is dropped. Unlike DeepSpeed, naming a host twice in ``include`` merges its slots
    instead of keeping the last mention.
    """
    if include and exclude:
        raise InputError("--include and --exclude are mutually exclusive; give one of them",
                         key="--include")
    if not include and not exclude:
        return list(hosts)
    option = "--include" if include else "--exclude"
    spec = include or exclude or ""
    chosen: dict[str, list[int]] = {}
    if include:
        for name, slots in _parse_filter(spec, hosts, option):
            host_slots = next(h.slot_ids for h in hosts if h.name == name)
            chosen.setdefault(name, []).extend(host_slots if slots is None else slots)
    else:
        chosen = {h.name: list(h.slot_ids) for h in hosts}
        for name, slots in _parse_filter(spec, hosts, option):
            drop = set(chosen[name]) if slots is None else set(slots)
            chosen[name] = [s for s in chosen[name] if s not in drop]
    result = []
    for h in hosts:
        ids = _dedup(chosen.get(h.name, ()))
        if ids:
            result.append(replace(h, slot_ids=ids))
    if not result:
        raise InputError(f"{spec!r} leaves no hosts to run on", key=option)
    return result
