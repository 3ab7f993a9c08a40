"""The host script ``alaunch hosts check`` runs (stdlib only; ``python3 -c PROGRAM REQUEST``).

PROBE ``{"op": "probe", "workdir"}`` (the marshal frame of
:func:`launcher.remote.wire.request_arg`, one argv element: the runner's ``run`` carries it as
a word, never as code) -> one JSON object with the host's facts. Run without ``-S``: the
versions come from the site's package metadata plus ``find_spec`` rather than importing
(importing mindformers takes ~7 s of CPU and writes ``output/log`` into the current
directory, which a check must not do).
"""

import os
import sys

from _prelude import answer, ascend_versions, run, versions


def probe(req):
    import importlib.util as iu
    import platform
    import shutil
    import socket
    import subprocess
    wd = os.path.expanduser(req["workdir"])
    r = {"hostname": socket.gethostname(), "arch": platform.machine(), "python": platform.python_version(),
         "python_path": sys.executable, "os": platform.system()}  # type: dict  # the answer: JSON values
    try:
        with open("/etc/os-release") as fh:
            kv = dict(line.rstrip("\n").split("=", 1) for line in fh if "=" in line)
        r["os"] = kv.get("PRETTY_NAME", r["os"]).strip('"')
    except OSError:
        pass

    def version(name):
        try:
            import importlib.metadata as md
        except ImportError:  # Python < 3.8 (a host's python3 may be 3.6): the dist-info names, as the preflight
            # reads them
            return versions().get(name)
        try:
            return md.version(name) if iu.find_spec(name) else None
        except Exception:
            return None
    r["mindspore"], r["mindformers"] = version("mindspore"), version("mindformers")
    r.update(ascend_versions())

    near = os.path.join(os.path.dirname(sys.executable), "msrun")
    r["msrun"] = shutil.which("msrun") or (near if os.access(near, os.X_OK) else None)
    smi = shutil.which("npu-smi")
    r["npu_smi"] = None
    if smi:
        try:
            p = subprocess.run([smi, "info"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               universal_newlines=True, timeout=20)
            r["npu_smi"] = {"path": smi, "code": p.returncode, "out": p.stdout, "err": p.stderr[-2000:]}
        except Exception as exc:
            r["npu_smi"] = {"path": smi, "code": -1, "out": "", "err": str(exc)}
    r["usage"] = usage(os.path.join(wd, "alaunch"))
    p = wd
    while not os.path.exists(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    du = shutil.disk_usage(p)
    r["disk"] = {"path": p, "workdir_exists": p == wd, "free": du.free, "total": du.total}
    answer(r)


def usage(base):
    """Bytes alaunch keeps under ``base``: its store (``cas``), and its job dirs counting only
    files that are not links into the store (each inode once); None when there is no base."""
    if not os.path.isdir(base):
        return None
    seen = set()

    def du(top):
        total = 0
        for dirpath, _dirs, files in os.walk(top):
            for name in files:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue
                if st.st_ino not in seen:
                    seen.add(st.st_ino)
                    total += st.st_blocks * 512
        return total
    store = du(os.path.join(base, "cas"))
    jobs = [n for n in os.listdir(base) if n not in ("cas", "cards") and os.path.isdir(os.path.join(base, n))]
    return {"store": store, "jobs": sum(du(os.path.join(base, n)) for n in jobs), "job_dirs": len(jobs)}


if __name__ == "__main__":
    run({"probe": probe})
