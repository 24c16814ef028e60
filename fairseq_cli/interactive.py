"""``fairseq-interactive``: continue prompts read from stdin (or ``--input FILE``), one per line.

    echo "the function returns" | fairseq-interactive DATA --task language_modeling \\
        --path checkpoints/checkpoint_best.pt --beam 1 --sampling --sampling-topk 10 --seed 1

For each prompt it prints fairseq's lines: ``S-id`` the prompt as encoded, ``W-id`` the seconds
spent, then for each of the ``--nbest`` hypotheses ``H-id``, ``D-id`` and ``P-id`` (scores in
base 2). Prompts are read ``--buffer-size`` at a time and generated in batches of
``--batch-size``; text goes through the checkpoint's tokenizer and BPE (or those named by flags).
"""
import logging
import sys
import time
from argparse import Namespace
from typing import Any, Dict, Iterator, List, Optional, Union

import torch
from omegaconf import DictConfig

from fairseq_cli.generate import Printer, as_config, build_encoders, generation_settings, load_ensemble, parse, set_threads

logger = logging.getLogger("fairseq_cli.interactive")


def _decoded_lines(stream: Any, name: str) -> Iterator[str]:
    """The lines of a binary ``stream``, decoded as UTF-8; lines end as in Python's text mode
    (at ``\\n``, ``\\r\\n`` or a lone ``\\r``).

    Raises:
        DataError: naming ``name``, the line number and the byte offset of the first line that
            is not UTF-8 (as fairseq-preprocess refuses such a file): a prompt is never turned
            into ``<unk>`` tokens behind the user's back.
    """
    from fairseq.errors import DataError

    position = 0
    for number, raw in enumerate(stream, 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{name}: line {number} (starting at byte {position}) is not valid UTF-8 "
                            f"({err.reason} at byte {position + err.start}); re-encode the input as "
                            "UTF-8") from None
        position += len(raw)
        if "\r" in text:
            # bytes.splitlines splits at \n, \r\n and \r only: text mode's universal newlines
            yield from (piece.decode("utf-8") for piece in raw.splitlines())
        else:
            yield text


def buffered_read(source: str, buffer_size: int) -> Iterator[List[str]]:
    """Lines of ``source`` (``-``: stdin), ``buffer_size`` at a time.

    Raises:
        DataError: for a line that is not UTF-8 (its number and byte offset named).
    """
    binary = getattr(sys.stdin, "buffer", None) if source == "-" else open(source, "rb")
    # a stdin replaced by a text stream without bytes underneath (an embedding program) is read as text
    lines: Iterator[str] = (_decoded_lines(binary, "stdin" if source == "-" else source)
                            if binary is not None else iter(sys.stdin))
    try:
        buffer: List[str] = []
        for line in lines:
            buffer.append(line.strip())
            if len(buffer) >= buffer_size:
                yield buffer
                buffer = []
        if buffer:
            yield buffer
    finally:
        if source != "-" and binary is not None:
            binary.close()


def interact(cfg: DictConfig, overrides: Dict[str, Any]) -> Dict[str, float]:
    """Load the checkpoint ``common_eval.path`` (``overrides`` winning over its config), then
    continue the prompts of ``interactive.input``; return the counts and the time spent."""
    import os

    from fairseq.errors import ConfigError
    from fairseq.sequence_generator import GenerationSettingError, build_generator

    given_buffer = int(cfg.interactive.buffer_size or 0)
    buffer_size = max(given_buffer, 1)
    batch_size = cfg.dataset.batch_size or buffer_size
    if batch_size > buffer_size and given_buffer:
        raise ConfigError(f"dataset.batch_size={batch_size} is larger than interactive.buffer_size="
                          f"{buffer_size}: a batch cannot hold more prompts than are read at once; "
                          "raise --buffer-size or lower --batch-size")
    source = str(cfg.interactive.input)
    if source != "-" and not os.path.isfile(source):
        raise ConfigError(f"interactive.input={source!r}: no such file (give a file, or - for stdin)")
    set_threads(cfg)
    models, saved_cfg, task = load_ensemble(cfg, overrides)
    use_cuda = torch.cuda.is_available() and not cfg.common.cpu
    device = torch.device("cuda" if use_cuda else "cpu")
    from fairseq.precision import cast_for_inference

    cast_for_inference(models, bool(cfg.common.bf16), device)  # --bf16: weights held in bfloat16
    for model in models:
        model.to(device)
    if cfg.common.seed is not None:
        torch.manual_seed(int(cfg.common.seed))
    src_dict, tgt_dict = task.source_dictionary, task.target_dictionary
    try:
        generator = build_generator(models, generation_settings(cfg), tgt_dict)
    except GenerationSettingError as e:
        raise ConfigError(str(e)) from None
    bpe, tokenizer = build_encoders(saved_cfg, cfg)
    printer = Printer(cfg, tgt_dict, bpe, tokenizer, sys.stdout)
    # optional: add_bos_token belongs to language_modeling; a plugin task's node may lack it
    bos = src_dict.bos() if saved_cfg.task.get("add_bos_token", False) else src_dict.eos()
    positions = min(m.max_positions() for m in models)

    def encode(line: str) -> torch.Tensor:
        if tokenizer is not None:
            line = tokenizer.encode(line)
        if bpe is not None:
            line = bpe.encode(line)
        tokens = src_dict.encode_line(line, add_if_not_exist=False, append_eos=False).long()
        if len(tokens) + 1 > positions:
            raise ConfigError(f"a prompt of {len(tokens)} tokens does not fit the model's {positions} "
                              f"positions (the first holds BOS): shorten it ({line[:40]!r}...)")
        return tokens

    logger.info("NOTE: hypothesis and token scores are output in base 2")
    logger.info("Type the input sentence and press return:")
    start_id, total = 0, 0.0
    for lines in buffered_read(source, buffer_size):
        prompts = [encode(line) for line in lines]
        for first in range(0, len(prompts), batch_size):
            chunk = prompts[first:first + batch_size]
            width = max(len(p) for p in chunk) + 1
            src = torch.full((len(chunk), width), src_dict.pad(), dtype=torch.long)
            for row, prompt in enumerate(chunk):
                src[row, 0] = bos
                src[row, 1:len(prompt) + 1] = prompt
            src = src.to(device)
            sample = {"net_input": {"src_tokens": src,
                                    "src_lengths": torch.tensor([len(p) + 1 for p in chunk], device=device)}}
            began = time.perf_counter()
            with torch.no_grad():
                hypos = generator.generate(models, sample, prefix_tokens=src[:, 1:], bos_token=bos)
            seconds = time.perf_counter() - began
            total += seconds
            for row, prompt in enumerate(chunk):
                sid = start_id + first + row
                print(f"S-{sid}\t{printer.string(prompt)}")
                print(f"W-{sid}\t{seconds / len(chunk):.3f}\tseconds")
                printer.hypotheses(sid, hypos[row])
        start_id += len(prompts)
    logger.info("Total time: %.3f seconds; translation time: %.3f", total, total)
    return {"sentences": start_id, "seconds": total}


def main(args: Union[Namespace, DictConfig, List[str], None] = None) -> Dict[str, float]:
    """Run interactive generation from a composed config (``fairseq-hydra-interactive``), a
    legacy namespace or command-line arguments (``None``: ``sys.argv[1:]``); which values win
    over the checkpoint's config is as in :func:`fairseq_cli.generate.main`."""
    from fairseq_cli.common import run_with_clear_errors, setup_logging

    setup_logging()
    if args is None or isinstance(args, (list, tuple)):
        argv = list(sys.argv[1:] if args is None else args)
        cfg, overrides = run_with_clear_errors(parse, argv, True)
        return run_with_clear_errors(interact, cfg, overrides)
    return interact(*as_config(args))


def cli_main(argv: Optional[List[str]] = None) -> None:
    """``fairseq-interactive``."""
    # everything it runs, plugin import included, ends a user error with one line
    from fairseq_cli.common import run_with_clear_errors

    run_with_clear_errors(main, argv)


if __name__ == "__main__":
    cli_main()
