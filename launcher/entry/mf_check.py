"""Load a rendered MindFormers YAML as a job will (``MindFormerConfig``) and, for a Llama model,
build ``LlamaConfig`` from its model_config (no weights): the MindFormers layer of ``alaunch``'s
validation (``--validate``), run by :mod:`launcher.ops.mfcheck` in a child process.

Usage: ``python mf_check.py ANSWER_FD``; each line on stdin is a request ``{"path": rendered
YAML, "model_type": model.model_config.type}``, each answer a line on ``ANSWER_FD``:
``{"detail"}`` or ``{"refused": "config" | "model_config", "message"}``; stdout and stderr
are the parent's log file. Imports nothing of ``launcher``. Why a child: importing
MindSpore/MindFormers writes ``output/log`` into the current directory and prints from C++ on
fds 1 and 2, so the check needs its own cwd and fds, which a process running pipeline steps
in threads cannot lend it.
"""

import json
import os
import sys


def check(request: dict) -> dict:
    from mindformers.tools.register import MindFormerConfig
    try:
        mf_config = MindFormerConfig(request["path"])
    except Exception as exc:  # MindFormers raises assorted types for a bad config
        return {"refused": "config", "message": str(exc)}
    detail = "MindFormerConfig loaded"
    if request.get("model_type") == "LlamaConfig":
        from mindformers.models.llama import LlamaConfig
        model_config = {k: v for k, v in mf_config.model.model_config.items() if k != "type"}
        try:
            built = LlamaConfig(**model_config)
        except Exception as exc:
            return {"refused": "model_config", "message": str(exc)}
        detail += f"; LlamaConfig built ({built.num_layers} layers, hidden {built.hidden_size})"
    return {"detail": detail}


def main(answer_fd: int) -> None:
    """One request per line on stdin (JSON), one answer per line on ``answer_fd``: the parent
    keeps this process for every check it makes (the import is paid once)."""
    answers = os.fdopen(answer_fd, "w", buffering=1, encoding="utf-8")
    for line in sys.stdin:
        try:
            answer = check(json.loads(line))
        except Exception as exc:  # a bug or a broken install: the parent says it, this one lives on
            answer = {"crashed": f"{type(exc).__name__}: {exc}"}
        answers.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main(int(sys.argv[1]))
