"""Files the package ships and reads at run time, found the same way installed or not.

The MindFormers templates (``configs/``, kept at the repository top level and reached in the
package through the ``launcher/configs`` symlink), the CPU entry staged with a job
(``launcher/entry/``) and the host-side scripts (``launcher/remote/``) are package data
(pyproject.toml ``[tool.setuptools.package-data]``). They are looked up through
:func:`importlib.resources.files`, never through paths relative to the repository: a
``Path(__file__).parents[2] / "configs"`` lookup worked from the source tree and failed in a
``pip install ./alaunch`` venv (``template ... not found ... site-packages/configs``).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def package_path(*parts: str) -> Path:
    """The shipped file or directory ``launcher/<parts...>`` as a filesystem path.

    A path, not a Traversable: staging hands these files to tar/sftp by name. Wheels are
    installed unpacked, so the package root is always a directory.
    """
    node = files("launcher")
    for part in parts:
        node = node.joinpath(part)
    return Path(str(node))
