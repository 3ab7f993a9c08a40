"""Run a MindFormers YAML job on CPU: ``run_mindformer.py``'s path, with the CPU patches first.

Usage (as ``run_mindformer.py``, usually under ``msrun``)::

    python run_cpu.py --config job.yaml [--run_mode finetune|train|eval|predict]
        [--load_checkpoint PATH] [--train_dataset_dir DIR] [--predict_data TEXT ...]
        [--predict_batch_size N] [--output_dir DIR] [--seed N] [--use_parallel BOOL]
        [--epochs N] [--batch_size N] [--options key=value ...]

The path is the one MindFormers users run: MindFormerConfig -> build_context ->
Trainer(config).train / evaluate / predict. Staged next to ``cpu_patches.py`` in the job's
``code/`` directory; it imports nothing from ``launcher`` so hosts need only mindspore and
mindformers. Predictions are also written, one JSON line per input, to
``<output_dir>/predictions.jsonl`` (``{"input": ..., "output": ...}``) on rank 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

RUN_MODES = ("train", "finetune", "eval", "predict")


def _str2bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The subset of run_mindformer.py's flags a CPU job uses, with the same names."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="rendered MindFormers YAML")
    parser.add_argument("--run_mode", choices=RUN_MODES)
    parser.add_argument("--load_checkpoint")
    parser.add_argument("--train_dataset_dir")
    parser.add_argument("--eval_dataset_dir")
    parser.add_argument("--predict_data", nargs="+")
    parser.add_argument("--predict_batch_size", type=int)
    parser.add_argument("--output_dir")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--use_parallel", type=_str2bool)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch_size", type=int)
    parser.add_argument("--device_target", default=None)
    parser.add_argument("--require_env", action="append", default=[], metavar="NAME",
                        help="exit 2 unless NAME is set (e.g. a variable the host's CANN set_env.sh exports)")
    parser.add_argument("--options", nargs="+", default=[],
                        help="key=value overrides merged into the config (dotted keys)")
    return parser.parse_args(argv)


def _read_predict_data(items: list[str] | None) -> list[str] | str | None:
    """A single existing .txt/.jsonl path is read one prompt per line, as a list."""
    if not items:
        return None
    if len(items) == 1 and os.path.isfile(items[0]):
        prompts = []
        with open(items[0], encoding="utf-8") as handle:
            for line in handle:
                line = line.rstrip("\n")
                if not line.strip():
                    continue
                if items[0].endswith(".jsonl"):
                    row = json.loads(line)
                    line = row.get("prompt") or row.get("problem") or row.get("input")
                prompts.append(line.replace(r"\n", "\n"))
        return prompts
    if len(items) == 1:
        return items[0].replace(r"\n", "\n")
    return [item.replace(r"\n", "\n") for item in items]


def padded_inputs(inputs: list[str] | str | None, batch: int | None) -> list[str] | str | None:
    """MindFormers rejects a prompt list that is not a multiple of the batch size: repeat the
    last prompt to fill the final batch (``_write_predictions`` pairs only the real ones)."""
    if not isinstance(inputs, list) or not inputs or not batch or batch <= 1:
        return inputs
    return inputs + [inputs[-1]] * (-len(inputs) % batch)


def build_config(args: argparse.Namespace):
    """Load the YAML and apply the command-line overrides exactly as run_mindformer.py does."""
    from mindformers.tools.register import MindFormerConfig

    config = MindFormerConfig(os.path.abspath(args.config))
    for name in ("run_mode", "load_checkpoint", "seed", "use_parallel", "output_dir"):
        value = getattr(args, name)
        if value is not None:
            setattr(config, name, value)
    if args.device_target:
        config.context.device_target = args.device_target
    if args.train_dataset_dir:
        config.train_dataset.data_loader.dataset_dir = args.train_dataset_dir
        task = config.get("train_dataset_task")
        if task and task.get("dataset_config"):  # the YAML anchor's copy, read by the trainer
            task.dataset_config.data_loader.dataset_dir = args.train_dataset_dir
    if args.eval_dataset_dir:
        config.eval_dataset.data_loader.dataset_dir = args.eval_dataset_dir
    if args.epochs is not None:
        config.runner_config.epochs = args.epochs
    if args.batch_size is not None:
        config.runner_config.batch_size = args.batch_size
    if args.options:
        import yaml
        options = {}
        for item in args.options:
            key, _, value = item.partition("=")
            options[key] = yaml.safe_load(value)
        config.merge_from_dict(options)
    if config.run_mode not in RUN_MODES:
        raise SystemExit(f"run_mode must be one of {RUN_MODES}, got {config.run_mode!r}")
    if config.run_mode == "predict":
        config.input_data = _read_predict_data(args.predict_data)
        if args.predict_batch_size is not None:
            config.predict_batch_size = args.predict_batch_size
    return config


def decode_unused_ids_as_unk() -> None:
    """Let predict decode ids that have no tokenizer piece, as ``<unk>``.

    The tiny model's vocabulary (1024) is larger than a locally trained SentencePiece model
    (a few hundred pieces): an untrained model (the demo's "before" pass) can emit such ids
    and MindFormers' tokenizer then raises IndexError. A trained model never emits them.
    """
    from mindformers.models.tokenization_utils import PreTrainedTokenizer

    original = PreTrainedTokenizer.convert_ids_to_tokens
    if getattr(original, "_alaunch_unk", False):
        return

    def convert(self, ids, skip_special_tokens: bool = False):
        size, unk = self.vocab_size, self.unk_token_id or 0
        if isinstance(ids, int):
            return original(self, unk if ids >= size else ids, skip_special_tokens)
        return original(self, [unk if int(i) >= size else int(i) for i in ids], skip_special_tokens)

    convert._alaunch_unk = True  # type: ignore[attr-defined]
    PreTrainedTokenizer.convert_ids_to_tokens = convert


def generated_texts(results) -> list[str]:
    """One text per prompt, in order. With ``batch_size`` > 1 MindFormers returns one dict per
    batch whose ``text_generation_text`` lists that batch's texts, so flatten them all."""
    texts: list[str] = []
    for result in results or []:
        text = result.get("text_generation_text", result) if isinstance(result, dict) else result
        texts.extend(text if isinstance(text, list) else [text])
    return texts


def _write_predictions(config, inputs, results) -> None:
    if int(os.environ.get("RANK_ID", os.environ.get("MS_NODE_ID", "0")) or 0) != 0:
        return
    if isinstance(inputs, str):
        inputs = [inputs]
    path = os.path.join(config.output_dir, "predictions.jsonl")
    os.makedirs(config.output_dir, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for prompt, text in zip(inputs or [], generated_texts(results)):
            handle.write(json.dumps({"input": prompt, "output": text}, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [name for name in args.require_env if not os.environ.get(name)]
    if missing:
        sys.stderr.write(f"run_cpu: required environment not set: {', '.join(missing)} "
                         "(the host's env scripts did not run?)\n")
        return 2
    for name in args.require_env:
        print(f"run_cpu: {name}={os.environ[name]}", flush=True)
    import cpu_patches  # noqa: F401 - before mindformers builds any network

    cpu_patches.apply()
    from mindformers.core.context import build_context
    from mindformers.trainer import Trainer

    config = build_config(args)
    if os.environ.get("MS_ROLE") == "MS_SCHED" and config.get("tensorboard"):
        # msrun runs this entry as its scheduler too, with rank 0's ids: both made
        # output/tensorboard/rank_0 at once and the loser's tensorboardX makedirs raised, which
        # killed the scheduler (seen in a full test run). The scheduler trains nothing: no writer.
        config.tensorboard.tensorboard_dir = ""
    if os.environ.get("MS_ROLE") == "MS_SCHED" and config.get("callbacks"):
        # the same race on output/checkpoint/rank_0: rank 0's CheckpointMonitor removes the
        # empty dir it just made ("created too early") while the scheduler's lists it, and the
        # scheduler died of FileNotFoundError after the job trained (two full runs, SSH and
        # Slurm: "Scheduler process N exit with exception"). No checkpoints from the scheduler.
        config.callbacks = [c for c in config.callbacks if (c or {}).get("type") != "CheckpointMonitor"]
    build_context(config)
    trainer = Trainer(config)
    if config.run_mode in ("train", "finetune"):
        trainer.train()
    elif config.run_mode == "eval":
        trainer.evaluate(eval_checkpoint=config.load_checkpoint)
    else:
        decode_unused_ids_as_unk()
        batch = config.get("predict_batch_size")
        inputs = padded_inputs(config.input_data, batch)
        results = trainer.predict(predict_checkpoint=config.load_checkpoint,
                                  input_data=inputs, batch_size=batch)
        _write_predictions(config, config.input_data, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
