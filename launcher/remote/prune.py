"""The host script ``alaunch prune`` runs (stdlib only; ``python3 -S -c PROGRAM``, request on stdin).

Every request is the marshal frame of :func:`launcher.remote.wire.request` (``_prelude.py``)
on stdin; answers are JSON. Two ops, so the choice in between is pure (``core/prune.py``):

SCAN ``{"op": "scan", "base": "<workdir>/alaunch"}`` -> ``{"now", "fsid", "jobs": [{"id",
"running", "started", "finished", "ended", "mtime"}]}``: every job directory (a name shaped
like a job id) with what the host knows: a live process carries its ``ALAUNCH_JOB_ID``
marker (running), a ``pid`` file (started), an ``exit_code`` for every started node
(finished; ``ended`` is the newest one's mtime). A job dir on a shared filesystem whose
node runs on another host has no exit code there, so it is never "finished" here.

PRUNE ``{"op": "prune", "base", "remove": [job ids], "checkpoints", "grace", "dry_run"}`` ->
what goes (or would go) and the bytes: the listed job dirs (their model — ``output/checkpoint``,
``output/merged``, ``output/strategy`` — and ``state`` kept unless ``checkpoints``), staged trees
no remaining job dir links to, store objects nothing else links to once those go, and
``cas/tmp`` leftovers (``.part`` files, half-built trees). Anything younger than ``grace``
seconds is kept: a submit staging right now has objects that nothing links to *yet*.
"""

import os
import re
import stat
import time

from _prelude import answer, cards_dir, open_own, run

JOB_DIR = re.compile(r"[a-z0-9-]+-\d{8}-\d{6}-[0-9a-f]{4}\Z")


def markers():
    want = b"ALAUNCH_JOB_ID="
    out = set()  # type: set[str]
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/environ" % name, "rb") as f:
                    env = f.read()
            except OSError:
                continue
            out.update(v[len(want):].decode("utf-8", "replace") for v in env.split(b"\0") if v.startswith(want))
    return out


def state_dirs(root):
    """``state/`` and any ``state/<node>/`` below it (per-node state dirs)."""
    top = os.path.join(root, "state")
    out = [top]
    try:
        out += [os.path.join(top, n) for n in os.listdir(top) if os.path.isdir(os.path.join(top, n))]
    except OSError:
        pass
    return out


def job_dirs(base):
    try:
        names = os.listdir(base)
    except OSError:
        return []
    return sorted(n for n in names if JOB_DIR.match(n) and os.path.isdir(os.path.join(base, n))
                  and not os.path.islink(os.path.join(base, n)))


def scan(req):
    base = os.path.abspath(os.path.expanduser(req["base"]))
    live = markers()
    jobs = []
    for name in job_dirs(base):
        root = os.path.join(base, name)
        started, ends, unfinished = False, [], False
        for d in state_dirs(root):
            pid, code = os.path.join(d, "pid"), os.path.join(d, "exit_code")
            if os.path.exists(pid):
                started = True
                if os.path.exists(code):
                    ends.append(os.stat(code).st_mtime)
                else:
                    unfinished = True
        jobs.append({"id": name, "running": name in live, "started": started,
                     "finished": started and bool(ends) and not unfinished,
                     "ended": int(max(ends)) if ends else None, "mtime": int(os.stat(root).st_mtime)})
    try:
        with open(os.path.join(base, "cas", ".fsid")) as f:
            fsid = f.read().strip()
    except OSError:
        fsid = None
    answer({"now": int(time.time()), "fsid": fsid, "base": base, "jobs": jobs})


def walk(top, skip=()):
    """(path, lstat) of every file under ``top`` (symlinks not followed), dirs in ``skip`` left out."""
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skip]
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            try:
                yield path, os.lstat(path)
            except OSError:
                continue


MODEL_DIRS = (("output", "checkpoint"), ("output", "merged"), ("output", "strategy"))


def keep_checkpoints(root):
    """What stays of a job dir pruned without ``checkpoints``: the model — ``output/checkpoint``
    (the per-rank shards), ``output/merged`` (the merged weights) and ``output/strategy`` (the
    sharding strategy, without which the shards can no longer be merged) — each when it holds a
    file, and ``state`` (the record of how they were made). Keeping only ``output/checkpoint``
    deleted the merged model and the strategy files."""
    keep = [os.path.join(root, *parts) for parts in MODEL_DIRS]
    keep = [d for d in keep if os.path.isdir(d) and any(True for _ in walk(d))]
    return keep + [os.path.join(root, "state")] if keep else []


def plan_job(root, keep, unlinked):
    """The bytes removing ``root`` (but ``keep``) frees: its files with one link; a hard link
    into the store is counted in ``unlinked`` instead (the object may go with it, see below)."""
    size = 0
    for _, st in walk(root, skip=keep):
        if stat.S_ISREG(st.st_mode):
            if st.st_nlink > 1:
                unlinked[st.st_ino] = unlinked.get(st.st_ino, 0) + 1
            else:
                size += st.st_size
    return size


def used_trees(base, gone):
    """Staged trees a job dir that stays links to (its symlinks' targets' names)."""
    used = set()
    for name in job_dirs(base):
        if name in gone:
            continue
        root = os.path.join(base, name)
        for entry in os.listdir(root):
            p = os.path.join(root, entry)
            if os.path.islink(p):
                used.add(os.path.basename(os.readlink(p).rstrip("/")))
    return used


def plan_trees(cas, used, now, grace, unlinked):
    """Staged trees nothing links to and older than ``grace``; their files' links counted in
    ``unlinked`` (a tree's files are the store's objects: their bytes are counted there)."""
    trees_dir = os.path.join(cas, "trees")
    dead = []
    for tid in sorted(os.listdir(trees_dir)) if os.path.isdir(trees_dir) else []:
        tdir = os.path.join(trees_dir, tid)
        if tid in used or now - os.lstat(tdir).st_mtime < grace:
            continue
        for _, st in walk(tdir):
            if stat.S_ISREG(st.st_mode):
                unlinked[st.st_ino] = unlinked.get(st.st_ino, 0) + 1
        dead.append(tdir)
    return dead


def plan_objects(cas, unlinked, now, grace):
    """(path, bytes) of store objects (``cas/xx/<sha>``) no link is left to once the planned job
    dirs and trees go, older than ``grace``."""
    dead = []
    for sub in sorted(os.listdir(cas)) if os.path.isdir(cas) else []:
        d = os.path.join(cas, sub)
        if len(sub) != 2 or not os.path.isdir(d):
            continue
        for sha in os.listdir(d):
            p = os.path.join(d, sha)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if st.st_nlink - unlinked.get(st.st_ino, 0) <= 1 and now - st.st_mtime >= grace:
                dead.append((p, st.st_size))
    return dead


def plan_parts(cas, now, grace):
    """(path, bytes) of ``cas/tmp`` leftovers (``.part`` files, half-built trees) older than ``grace``."""
    tmp = os.path.join(cas, "tmp")
    dead = []
    for name in sorted(os.listdir(tmp)) if os.path.isdir(tmp) else []:
        p = os.path.join(tmp, name)
        st = os.lstat(p)
        if now - st.st_mtime < grace:
            continue
        dead.append((p, sum(s.st_size for _, s in walk(p)) if stat.S_ISDIR(st.st_mode) else st.st_size))
    return dead


def remove_job(root, keep):
    """``root`` gone but the ``keep`` dirs (and the dirs leading to them)."""
    import shutil
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
        return
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        if dirpath in keep or any(dirpath.startswith(k + os.sep) for k in keep):
            continue
        for name in filenames:
            os.unlink(os.path.join(dirpath, name))
        for name in dirnames:
            p = os.path.join(dirpath, name)
            if p in keep or any(k.startswith(p + os.sep) for k in keep):
                continue
            if os.path.islink(p):
                os.unlink(p)
            else:
                shutil.rmtree(p, ignore_errors=True)


def remove_claims(base, job_id, req):
    """The job's card claims: its host-wide one (ours only, through the dir's fd) and the old
    per-workdir ones under every host's claims dir (hosts may share this workdir). Removed
    with the job dir: a claim whose state dir is gone can no longer be judged ended and would
    hold its cards for the pre-start grace (5 min) — a new job there was refused."""
    try:
        dfd = os.open(cards_dir(req), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        dfd = None
    if dfd is not None:
        fd = open_own(dfd, job_id + ".claim", os.O_RDONLY)
        if fd is not None:
            os.close(fd)
            try:
                os.unlink(job_id + ".claim", dir_fd=dfd)
            except OSError:
                pass
        os.close(dfd)
    cards = os.path.join(base, "cards")
    for host in (os.listdir(cards) if os.path.isdir(cards) else []):
        try:
            os.unlink(os.path.join(cards, host, job_id))
        except OSError:
            continue


def remove_tree(cas, tdir, grace):
    """Move the tree out of the way (atomic), look at its mtime again, then remove it — or put it
    back when a submit touched it meanwhile to reuse it (remote/stage.py's ``fresh``): the scan
    and the removal are far apart, and a reused tree's ``code`` link would dangle."""
    import shutil
    dead = os.path.join(cas, "tmp", "dead-tree.%s.%d" % (os.path.basename(tdir), os.getpid()))
    try:
        os.makedirs(os.path.dirname(dead), exist_ok=True)
        os.rename(tdir, dead)
    except OSError:
        return
    if time.time() - os.lstat(dead).st_mtime < grace:
        try:
            os.rename(dead, tdir)
            return
        except OSError:
            pass  # rebuilt meanwhile under its name: this copy can go
    shutil.rmtree(dead, ignore_errors=True)


def remove_object(p):
    try:
        if os.lstat(p).st_nlink <= 1:  # checked again: linked meanwhile by a submit
            os.unlink(p)
    except OSError:
        pass


def remove_part(p):
    import shutil
    if os.path.isdir(p) and not os.path.islink(p):
        shutil.rmtree(p, ignore_errors=True)
    else:
        try:
            os.unlink(p)
        except OSError:
            pass


def tally(dead):
    return {"count": len(dead), "bytes": sum(size for _, size in dead)}


def prune(req):
    """Plan every kind of garbage first (job dirs, then trees, then the objects their going
    unlinks, then tmp leftovers), answer the plan; remove it unless ``dry_run``."""
    base = os.path.abspath(os.path.expanduser(req["base"]))
    cas = os.path.join(base, "cas")
    now, grace, dry = time.time(), req.get("grace", 3600), req.get("dry_run", True)
    remove = [n for n in req["remove"] if JOB_DIR.match(n) and os.path.isdir(os.path.join(base, n))]
    unlinked = {}  # type: dict[int, int]  # inode -> links that go with the removed job dirs and trees
    plans = [(os.path.join(base, n), [] if req.get("checkpoints") else keep_checkpoints(os.path.join(base, n)))
             for n in remove]
    jobs = [{"id": n, "bytes": plan_job(root, keep, unlinked), "checkpoints_kept": bool(keep)}
            for n, (root, keep) in zip(remove, plans)]
    trees = plan_trees(cas, used_trees(base, set(remove)), now, grace, unlinked)
    objects = plan_objects(cas, unlinked, now, grace)
    parts = plan_parts(cas, now, grace)
    out = {"jobs": jobs, "trees": [{"id": os.path.basename(t), "bytes": 0} for t in trees],
           "objects": tally(objects), "parts": tally(parts)}
    out["bytes"] = sum(j["bytes"] for j in jobs) + out["objects"]["bytes"] + out["parts"]["bytes"]
    if not dry:
        for name, (root, keep) in zip(remove, plans):
            remove_job(root, keep)
            remove_claims(base, name, req)
        for p in trees:
            remove_tree(cas, p, grace)
        for p, _ in objects:
            remove_object(p)
        for p, _ in parts:
            remove_part(p)
    out["dry_run"] = bool(dry)
    answer(out)


if __name__ == "__main__":
    run({"scan": scan, "prune": prune})
