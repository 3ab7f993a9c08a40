"""Option sets shared by the verbs, as typer ``Annotated`` aliases (defaults stay in each verb's
signature, so ``--help`` and the function agree).

Which hosts: ``-H HOSTFILE`` or ``--local`` (the default without -H), ``--slots`` for local,
DeepSpeed's ``--include``/``--exclude`` filters. How to reach them: ``--known-hosts``,
``--ssh-config``, ``--accept-new-host-keys``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

HostfileOpt = Annotated[Path | None, typer.Option("-H", "--hostfile", help="Hostfile (DeepSpeed format).")]
LocalOpt = Annotated[bool, typer.Option("--local", help="Run on this machine, no SSH (the default without -H).")]
# $ALAUNCH_LOCAL_SLOTS is read when the command runs (a default computed at import would be read once,
# whenever the verb's module was first imported)
SlotsOpt = Annotated[int, typer.Option("--slots", envvar="ALAUNCH_LOCAL_SLOTS",
                                       help="Slots of this machine with --local.")]
IncludeOpt = Annotated[str | None, typer.Option("--include", help="Only these hosts/slots: NAME[:0,1][@NAME...].")]
ExcludeOpt = Annotated[str | None, typer.Option("--exclude", help="Not these hosts/slots: NAME[:0,1][@NAME...].")]

KnownHostsOpt = Annotated[Path | None, typer.Option("--known-hosts",
                                                       help="known_hosts file (default: ~/.ssh/known_hosts).")]
SshConfigOpt = Annotated[Path | None, typer.Option("--ssh-config", help="ssh config file (default: ~/.ssh/config).")]
AcceptNewOpt = Annotated[bool, typer.Option("--accept-new-host-keys",
                                            help="Trust unknown host keys and add them to known_hosts.")]

