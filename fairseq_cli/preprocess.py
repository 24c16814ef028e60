"""fairseq-preprocess: build a dictionary and binarize text into memory-mapped datasets.

Language-model data (one side) only::

    fairseq-preprocess --only-source --trainpref data/train.txt --validpref data/valid.txt \\
        --destdir data-bin/corpus --workers 4

writes ``dict.txt``, ``train.bin/.idx`` and ``valid.bin/.idx`` into ``--destdir``.
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence, Tuple

from fairseq.binarizer import binarize_file, find_offsets
from fairseq.data.dictionary import Dictionary
from fairseq.errors import UserError
from fairseq.data.indexed_dataset import (
    data_file_path,
    index_file_path,
    make_builder,
)
from fairseq.tokenizer import tokenize_line

logger = logging.getLogger("fairseq_cli.preprocess")

SPLITS = ("train", "valid", "test")


class PreprocessError(UserError):
    """A problem with the user's input, reported as one line without a traceback."""


def get_preprocessing_parser() -> argparse.ArgumentParser:
    """Build the argument parser of ``fairseq-preprocess`` (its flags: :func:`fairseq.options.preprocess_flags`)."""
    from fairseq.options import preprocess_flags

    parser = argparse.ArgumentParser(
        prog="fairseq-preprocess",
        description="Build a dictionary and binarize text files into memory-mapped datasets.",
        allow_abbrev=False,
    )
    preprocess_flags(parser)
    return parser


def _output_prefix(args: argparse.Namespace, split_name: str) -> str:
    """Destination path, without extension, of one split of the source side."""
    if args.source_lang is None:
        return os.path.join(args.destdir, split_name)
    return os.path.join(args.destdir, f"{split_name}.{args.source_lang}-{args.target_lang}.{args.source_lang}")


def _dict_path(args: argparse.Namespace) -> str:
    name = "dict.txt" if args.source_lang is None else f"dict.{args.source_lang}.txt"
    return os.path.join(args.destdir, name)


def _input_file(args: argparse.Namespace, prefix: str) -> str:
    return prefix if args.source_lang is None else f"{prefix}.{args.source_lang}"


def _planned_splits(args: argparse.Namespace) -> List[Tuple[str, str, str]]:
    """(flag, output split name, input file) for every split to binarize, in order."""
    planned = []
    for split in SPLITS:
        prefixes = getattr(args, f"{split}pref")
        if not prefixes:
            continue
        for number, prefix in enumerate(prefixes.split(",")):
            split_name = split if number == 0 else f"{split}{number}"
            planned.append((f"--{split}pref", split_name, _input_file(args, prefix)))
    return planned


def _describe_missing(path: str, flag: str) -> str:
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        return f"input file {path} not found (from {flag}): directory {directory} does not exist"
    entries = sorted(os.listdir(directory))
    shown = ", ".join(entries[:10]) + (f", ... ({len(entries)} in all)" if len(entries) > 10 else "")
    return f"input file {path} not found (from {flag}); {directory} contains: {shown or 'nothing'}"


def _validate(args: argparse.Namespace) -> List[Tuple[str, str, str]]:
    """Check the arguments and that every input exists before writing anything."""
    if args.target_lang is not None and not args.only_source:
        raise PreprocessError(
            "bilingual (translation) preprocessing is not supported yet; pass --only-source to process "
            "the source side only"
        )
    if args.source_lang is not None and not args.only_source:
        raise PreprocessError(
            "-s/--source-lang without --only-source (bilingual data) is not supported yet; add --only-source"
        )
    if args.workers < 1:
        raise PreprocessError(f"--workers must be >= 1, got {args.workers}")
    if args.padding_factor < 1:
        raise PreprocessError(f"--padding-factor must be >= 1, got {args.padding_factor}")
    if args.nwordssrc < -1:
        raise PreprocessError(f"--nwordssrc {args.nwordssrc}: give -1 (keep every word) or the number "
                              "of words to keep (>= 0)")
    if args.srcdict is None and not args.trainpref:
        raise PreprocessError("--trainpref is required to build a dictionary (or pass --srcdict to reuse one)")
    if args.srcdict is not None and not os.path.isfile(args.srcdict):
        raise PreprocessError(_describe_missing(args.srcdict, "--srcdict"))

    planned = [] if args.dict_only else _planned_splits(args)
    needed = list(planned)
    if args.srcdict is None:  # every train file feeds the dictionary
        needed.extend(("--trainpref", "train", _input_file(args, prefix)) for prefix in args.trainpref.split(","))
    for flag, _, path in needed:
        if os.path.isdir(path):
            raise PreprocessError(f"{flag} {path} is a directory; give the path of a text file without "
                                  "its language suffix (e.g. --trainpref corpus/train.txt)")
        if not os.path.isfile(path):
            raise PreprocessError(_describe_missing(path, flag))
    return planned


def _build_dictionary(args: argparse.Namespace) -> Dictionary:
    if args.srcdict is not None:
        return Dictionary.load(args.srcdict)
    dictionary = Dictionary()
    for train_prefix in args.trainpref.split(","):
        Dictionary.add_file_to_dictionary(_input_file(args, train_prefix), dictionary, tokenize_line, args.workers)
    dictionary.finalize(threshold=args.thresholdsrc, nwords=args.nwordssrc, padding_factor=args.padding_factor)
    return dictionary


def _binarize_split(
    args: argparse.Namespace, dictionary: Dictionary, input_file: str, out_prefix: str
) -> Dict[str, Any]:
    """Binarize one file into ``out_prefix.bin/.idx``, in parallel byte ranges if asked.

    Each worker writes its own temporary dataset; they are appended in file order and
    deleted, so the output equals a single-process run and memory stays bounded.
    """
    offsets = find_offsets(input_file, args.workers)
    ranges = [(start, end) for start, end in zip(offsets[:-1], offsets[1:])]
    if args.workers == 1 or len(ranges) == 1:
        return binarize_file(input_file, dictionary, out_prefix, 0, offsets[-1], impl=args.dataset_impl)

    shard_prefixes = [f"{out_prefix}.worker{worker}" for worker in range(len(ranges))]
    jobs = [
        (input_file, dictionary, shard_prefix, start, end, True, args.dataset_impl)
        for shard_prefix, (start, end) in zip(shard_prefixes, ranges)
    ]
    try:
        with multiprocessing.Pool(processes=args.workers) as pool:
            shard_stats = pool.starmap(binarize_file, jobs)
        builder = make_builder(data_file_path(out_prefix), args.dataset_impl, vocab_size=len(dictionary))
        for shard_prefix in shard_prefixes:
            builder.merge_file_(shard_prefix)
        builder.finalize(index_file_path(out_prefix))
    finally:
        for shard_prefix in shard_prefixes:
            for path in (data_file_path(shard_prefix), index_file_path(shard_prefix)):
                if os.path.exists(path):
                    os.remove(path)

    stats: Dict[str, Any] = {"nseq": 0, "ntok": 0, "nunk": 0, "replaced": Counter()}
    for shard in shard_stats:
        for key in ("nseq", "ntok", "nunk"):
            stats[key] += shard[key]
        stats["replaced"].update(shard["replaced"])
    return stats


def _is_data_bin_file(name: str) -> bool:
    """A dictionary (``dict.txt``, ``dict.<lang>.txt``) or a binarized split (``.bin``/``.idx``)."""
    return (name.endswith((".bin", ".idx"))
            or (name.startswith("dict.") and name.endswith(".txt") and name.count(".") <= 2))


def existing_data_bin(destdir: str) -> List[str]:
    """The dictionaries and binarized splits already in ``destdir``, sorted."""
    if not os.path.isdir(destdir):
        return []
    return sorted(name for name in os.listdir(destdir)
                  if _is_data_bin_file(name) and os.path.isfile(os.path.join(destdir, name)))


def _check_destdir(args: argparse.Namespace) -> None:
    """Refuse to write into a destdir that already holds a data-bin, unless ``--overwrite``."""
    if os.path.exists(args.destdir) and not os.path.isdir(args.destdir):
        raise PreprocessError(f"--destdir {args.destdir} exists and is not a directory")
    found = existing_data_bin(args.destdir)
    if found and not getattr(args, "overwrite", False):
        shown = ", ".join(found[:6]) + (f", ... ({len(found)} files)" if len(found) > 6 else "")
        raise PreprocessError(
            f"--destdir {args.destdir} already holds a data-bin ({shown}); splits binarized with "
            "another dictionary would be mixed with this run's. Choose another --destdir, or pass "
            "--overwrite to rebuild it (every old split this run does not write is deleted)")


def _clear_data_bin(destdir: str) -> None:
    """Delete the old dictionaries and splits (``--overwrite``): none may outlive the new dictionary."""
    for name in existing_data_bin(destdir):
        os.remove(os.path.join(destdir, name))
        logger.info("--overwrite: removed %s", os.path.join(destdir, name))


def _run(args: argparse.Namespace, planned: List[Tuple[str, str, str]]) -> None:
    """Build and save the dictionary, then binarize every planned split.

    With ``--overwrite`` the old data-bin files are deleted after the dictionary is built (it may
    be read from ``--srcdict`` in the destdir itself) and before anything is written. A run that
    fails midway deletes what it wrote, so the destdir never holds a partial data-bin and the
    same command can be rerun once the input is fixed.
    """
    dictionary = _build_dictionary(args)
    dict_path = _dict_path(args)
    if getattr(args, "overwrite", False):
        _clear_data_bin(args.destdir)
    written = [dict_path]
    try:
        dictionary.save(dict_path)
        logger.info("wrote dictionary of %d types to %s", len(dictionary), dict_path)
        if args.dict_only:
            return
        for _, split_name, input_file in planned:
            out_prefix = _output_prefix(args, split_name)
            written += [data_file_path(out_prefix), index_file_path(out_prefix)]
            stats = _binarize_split(args, dictionary, input_file, out_prefix)
            replaced_percent = 100.0 * sum(stats["replaced"].values()) / max(stats["ntok"], 1)
            logger.info(
                "[%s] %s: %d types; %s: %d sents, %d tokens, %.1f%% replaced by %s",
                split_name, os.path.basename(dict_path), len(dictionary), split_name,
                stats["nseq"], stats["ntok"], replaced_percent, dictionary.unk_word,
            )
    except BaseException:
        for path in written:
            if os.path.exists(path):
                os.remove(path)
        raise
    logger.info("wrote preprocessed data to %s", args.destdir)


def main(args: argparse.Namespace) -> None:
    """Run preprocessing as described by parsed ``args``.

    Raises:
        PreprocessError: on invalid arguments or missing inputs, or a destdir that already
            holds a data-bin without ``--overwrite`` (checked before anything is written), or on
            malformed input data (invalid UTF-8, a bad ``--srcdict``).
    """
    planned = _validate(args)
    _check_destdir(args)
    os.makedirs(args.destdir, exist_ok=True)
    log_handler = logging.FileHandler(os.path.join(args.destdir, "preprocess.log"), mode="w", encoding="utf-8")
    log_handler.setFormatter(logging.Formatter("%(asctime)s | %(levelname)s | %(name)s | %(message)s",
                                               datefmt="%Y-%m-%d %H:%M:%S"))
    logger.addHandler(log_handler)
    # The log file records the run even when the console logging is quieter than INFO.
    saved_level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        logger.info(args)
        try:
            _run(args, planned)
        except ValueError as err:  # bad input data (encoding, malformed dictionary, ...)
            raise PreprocessError(str(err)) from err
    finally:
        logger.setLevel(saved_level)
        logger.removeHandler(log_handler)
        log_handler.close()


def cli_main(argv: Optional[Sequence[str]] = None) -> None:
    """Console entry point ``fairseq-preprocess``; exits with status 2 on user errors."""
    args = get_preprocessing_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        from fairseq.logging.progress_bar import setup_logging

        setup_logging()
    try:
        main(args)
    except UserError as err:  # PreprocessError, or a DataError from a file it reads
        print(f"fairseq-preprocess: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)


if __name__ == "__main__":
    cli_main()
