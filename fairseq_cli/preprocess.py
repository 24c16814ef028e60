"""fairseq-preprocess: build a dictionary and binarize text into memory-mapped datasets.

Language-model data (one side) only::

    fairseq-preprocess --only-source --trainpref data/train.txt --validpref data/valid.txt \\
        --destdir data-bin/corpus --workers 4

writes ``dict.txt``, ``train.bin/.idx`` and ``valid.bin/.idx`` into ``--destdir`` and appends
the run's lines to its ``preprocess.log``.

Nothing is lost: the new data-bin is built aside (``<destdir>/.preprocess-tmp-<pid>``) and
swapped in only once complete, so a bad input, Ctrl-C or a kill leaves the old one (with
``--overwrite``) whole; the next run cleans what a killed one left.
"""
from __future__ import annotations

import argparse
import codecs
import errno
import logging
import multiprocessing
import os
import re
import shutil
import signal
import sys
import threading
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence, Tuple

from fairseq.binarizer import binarize_file, find_offsets
from fairseq.data.dictionary import Dictionary
from fairseq.errors import ResourceError, UserError
from fairseq.data.indexed_dataset import (
    data_file_path,
    index_file_path,
    make_builder,
)
from fairseq.save_dir_lock import pid_alive
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


def _output_prefix(args: argparse.Namespace, split_name: str, directory: str) -> str:
    """Path in ``directory``, without extension, of one split of the source side."""
    if args.source_lang is None:
        return os.path.join(directory, split_name)
    return os.path.join(directory, f"{split_name}.{args.source_lang}-{args.target_lang}.{args.source_lang}")


def _dict_name(args: argparse.Namespace) -> str:
    return "dict.txt" if args.source_lang is None else f"dict.{args.source_lang}.txt"


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
    """Check the arguments, and that every input exists and holds a token, before writing anything."""
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
    for flag, _, path in needed:
        if not _has_a_token(path):
            raise PreprocessError(_describe_empty(path, flag))
    return planned


# Bytes read per step when looking for a first token: a real corpus answers in the first one.
_EMPTY_CHECK_CHUNK = 1 << 16


def _has_a_token(path: str) -> bool:
    """Whether the text file at ``path`` holds at least one token (non-whitespace character).

    Reads only up to the first one; bytes that are not UTF-8 count as a token here (the
    binarization then reports them with their line).
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with open(path, "rb") as file:
        while True:
            chunk = file.read(_EMPTY_CHECK_CHUNK)
            text = decoder.decode(chunk, final=not chunk)
            if text and not text.isspace():
                return True
            if not chunk:
                return False


def _describe_empty(path: str, flag: str) -> str:
    """The one line refusing an input file without a token."""
    size = os.path.getsize(path)
    what = "is empty" if size == 0 else f"holds no token (its {size} bytes are all whitespace)"
    if flag == "--trainpref":
        fix = "a corpus needs at least one word: give a text file with text in it"
    else:
        fix = f"give a text file with at least one line of text, or leave {flag} out"
    return f"{flag} {path} {what}; {fix}"


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
    found = existing_data_bin(args.destdir)
    # optional: --overwrite is this project's flag; a Namespace made without it means no
    if found and not getattr(args, "overwrite", False):
        shown = ", ".join(found[:6]) + (f", ... ({len(found)} files)" if len(found) > 6 else "")
        raise PreprocessError(
            f"--destdir {args.destdir} already holds a data-bin ({shown}); splits binarized with "
            "another dictionary would be mixed with this run's. Choose another --destdir, or pass "
            "--overwrite to rebuild it (every old split this run does not write is deleted)")


def _check_destdir_path(destdir: str) -> None:
    """Refuse a ``--destdir`` that is no directory, or that cannot be created or written."""
    if os.path.lexists(destdir) and not os.path.isdir(destdir):
        raise PreprocessError(f"--destdir {destdir} exists and is not a directory; give a directory "
                              "(it is created when missing)")
    if os.path.isdir(destdir):
        if not os.access(destdir, os.W_OK | os.X_OK):
            raise ResourceError(f"--destdir {destdir} is not writable; give a directory you can write")
        return
    parent = os.path.dirname(os.path.abspath(destdir))
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise PreprocessError(f"--destdir {destdir} cannot be created: {parent} is not a directory; "
                              "give a --destdir under a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ResourceError(f"--destdir {destdir} cannot be created: {parent} is not writable; give "
                            "a --destdir in a directory you can write")


def _make_destdir(destdir: str) -> None:
    try:
        os.makedirs(destdir, exist_ok=True)
    except OSError as err:
        raise ResourceError(f"--destdir {destdir} cannot be created: {err.strerror}; give another "
                            "--destdir") from None


# -- building aside and swapping in ---------------------------------------------------------------
# The new data-bin is built in ``<destdir>/.preprocess-tmp-<pid>``; the old one is moved aside
# into ``<destdir>/.preprocess-old-<pid>``, which holds MOVED_MARK once all of it is there. Both
# live inside the destdir, so every rename stays on one filesystem (a destdir may be a mount
# point) and the destdir's parent need not be writable.
_SCRATCH_NAME = re.compile(r"\.preprocess-(tmp|old)-([0-9]+)")
MOVED_MARK = ".all-moved"


def _scratch(destdir: str, kind: str, pid: Optional[int] = None) -> str:
    """``<destdir>/.preprocess-<kind>-<pid>`` (this process's by default)."""
    return os.path.join(destdir, f".preprocess-{kind}-{os.getpid() if pid is None else pid}")


def _fsync(path: str) -> None:
    """fsync a file or a directory, so that a rename after it never names lost bytes."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # a filesystem that cannot fsync a directory
        pass
    finally:
        os.close(fd)


def _swap_in(destdir: str, tmp: str) -> None:
    """Replace the data-bin files of ``destdir`` by the complete new ones in ``tmp``.

    The old files are moved aside, the new ones renamed in, the aside directory deleted.
    Removing the empty ``tmp`` is the commit point: until then an error rolls back here, and a
    kill is rolled back by the next run (:func:`recover_interrupted`). Ctrl-C waits until the
    swap is over.
    """
    old = _scratch(destdir, "old")
    with _CtrlCDeferred() as ctrl_c:
        try:
            os.mkdir(old)
            for name in existing_data_bin(destdir):
                os.rename(os.path.join(destdir, name), os.path.join(old, name))
            with open(os.path.join(old, MOVED_MARK), "wb") as mark:
                os.fsync(mark.fileno())
            _fsync(old)
            for name in sorted(os.listdir(tmp)):
                os.rename(os.path.join(tmp, name), os.path.join(destdir, name))
            os.rmdir(tmp)
            _fsync(destdir)
        except BaseException:
            _roll_back(destdir, tmp, old)
            raise
        shutil.rmtree(old, ignore_errors=True)
    if ctrl_c.came:
        raise PreprocessInterrupted(f"interrupted (Ctrl-C) while the new data-bin was moved in; it "
                                    f"was finished first: --destdir {destdir} holds it complete")


def _roll_back(destdir: str, tmp: str, old: str) -> None:
    """Undo a swap that did not reach its commit point: the old data-bin files go back into
    ``destdir``, the new ones already there are deleted, both scratch directories removed."""
    if os.path.isdir(old):
        if os.path.exists(os.path.join(old, MOVED_MARK)):  # every data-bin file in destdir is new
            for name in existing_data_bin(destdir):
                os.remove(os.path.join(destdir, name))
        for name in os.listdir(old):
            if name != MOVED_MARK:
                os.replace(os.path.join(old, name), os.path.join(destdir, name))
        _fsync(destdir)
        shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)


def recover_interrupted(destdir: str) -> List[str]:
    """Clean what a killed run left in ``destdir``; returns one line per directory handled.

    Only directories named ``.preprocess-tmp-<pid>`` / ``.preprocess-old-<pid>`` whose writer
    ``<pid>`` is dead are touched (a live one is named and kept): a killed build is deleted; a
    swap killed before its commit point is rolled back (the old data-bin put back), one killed
    after it finished (its aside copy deleted).
    """
    found: Dict[int, set] = {}
    for name in os.listdir(destdir) if os.path.isdir(destdir) else []:
        m = _SCRATCH_NAME.fullmatch(name)
        full = os.path.join(destdir, name)
        if m and os.path.isdir(full) and not os.path.islink(full):
            found.setdefault(int(m.group(2)), set()).add(m.group(1))
    done = []
    for pid, kinds in sorted(found.items()):
        names = ", ".join(os.path.basename(_scratch(destdir, k, pid)) for k in sorted(kinds))
        if pid != os.getpid() and pid_alive(pid):
            done.append(f"kept {names} in {destdir}: process {pid}, which writes it, is running")
        elif kinds == {"tmp", "old"}:
            _roll_back(destdir, _scratch(destdir, "tmp", pid), _scratch(destdir, "old", pid))
            done.append(f"put the old data-bin back into {destdir}: process {pid} was killed while "
                        "it moved a new one in")
        else:
            shutil.rmtree(_scratch(destdir, kinds.pop(), pid), ignore_errors=True)
            done.append(f"removed {names} from {destdir}, left by run {pid}, which was killed")
    return done


class _CtrlCDeferred:
    """Within the block, Ctrl-C (SIGINT) is recorded instead of raised: ``came`` says whether
    one came. Only the main thread receives signals; elsewhere, or where SIGINT is ignored,
    nothing changes."""

    def __enter__(self) -> "_CtrlCDeferred":
        self.came = False
        self._previous = None
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) not in (signal.SIG_IGN, None)):
            self._previous = signal.signal(signal.SIGINT, self._record)
        return self

    def _record(self, signum: int, frame: Any) -> None:
        self.came = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


_SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}


class PreprocessInterrupted(KeyboardInterrupt):
    """Ctrl-C (or the stop signal ``signum``); :attr:`message` says what became of ``--destdir``."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.message = message
        self.signum = int(signum)


# -- worker processes -------------------------------------------------------------------------------
# True while main() runs: the processes it forks (dictionary and binarization workers) leave
# Ctrl-C to the main process, which stops them, and end when it ends (even by kill -9).
_forking_workers = False
_main_pid = 0


def _as_worker() -> None:
    """In a process forked while preprocessing: ignore SIGINT, die with the main process."""
    if not _forking_workers:
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
        if os.getppid() != _main_pid:  # the main process ended before the line above
            os._exit(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_as_worker)


# -- the run -------------------------------------------------------------------------------------
def _build(args: argparse.Namespace, planned: List[Tuple[str, str, str]], dictionary: Dictionary,
           directory: str) -> None:
    """Save the dictionary and binarize every planned split into ``directory``; fsync them."""
    dict_name = _dict_name(args)
    dictionary.save(os.path.join(directory, dict_name))
    logger.info("dictionary %s: %d types", dict_name, len(dictionary))
    for _, split_name, input_file in ([] if args.dict_only else planned):
        stats = _binarize_split(args, dictionary, input_file, _output_prefix(args, split_name, directory))
        replaced_percent = 100.0 * sum(stats["replaced"].values()) / max(stats["ntok"], 1)
        logger.info(
            "[%s] %s: %d types; %s: %d sents, %d tokens, %.1f%% replaced by %s",
            split_name, dict_name, len(dictionary), split_name,
            stats["nseq"], stats["ntok"], replaced_percent, dictionary.unk_word,
        )
    for name in os.listdir(directory):
        _fsync(os.path.join(directory, name))
    _fsync(directory)


_RESOURCE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


def _run(args: argparse.Namespace, planned: List[Tuple[str, str, str]]) -> None:
    """Build the dictionary and binarize every planned split aside, then swap them in.

    The old data-bin stays whole and in place until the new one is complete (``--srcdict`` may
    name its dict.txt); a run that fails, or is interrupted, deletes what it built and leaves
    the destdir as it was, so the same command can be rerun once the input is fixed.
    """
    dictionary = _build_dictionary(args)
    tmp = _scratch(args.destdir, "tmp")
    try:
        os.mkdir(tmp)
        _build(args, planned, dictionary, tmp)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError) and err.errno in _RESOURCE_ERRNOS:
            raise ResourceError(f"--destdir {args.destdir}: {err.strerror} writing {err.filename}; free "
                                "space there or give another --destdir (the old data-bin is unchanged)") from None
        raise
    try:
        _swap_in(args.destdir, tmp)
    except OSError as err:
        raise ResourceError(f"--destdir {args.destdir}: {err.strerror} moving the new data-bin in "
                            f"({err.filename}); the old data-bin is unchanged") from None
    logger.info("wrote preprocessed data to %s", args.destdir)


class _RunLog:
    """``preprocess.log`` in the destdir, appended to (opened at its first line); the file gets
    INFO lines even when the console is quieter."""

    def __init__(self) -> None:
        self.handler: Optional[logging.Handler] = None
        self.saved_level = logger.level

    def open(self, destdir: str) -> None:
        if self.handler is not None:
            return
        self.handler = logging.FileHandler(os.path.join(destdir, "preprocess.log"), mode="a",
                                           encoding="utf-8", delay=True)
        self.handler.setFormatter(logging.Formatter("%(asctime)s | %(levelname)s | %(name)s | %(message)s",
                                                    datefmt="%Y-%m-%d %H:%M:%S"))
        logger.addHandler(self.handler)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)

    def close(self) -> None:
        logger.setLevel(self.saved_level)
        if self.handler is not None:
            logger.removeHandler(self.handler)
            self.handler.close()


def main(args: argparse.Namespace) -> None:
    """Run preprocessing as described by parsed ``args``.

    What a killed run left in the destdir is cleaned first (:func:`recover_interrupted`).

    Raises:
        PreprocessError: on invalid arguments or missing inputs, or a destdir that already
            holds a data-bin without ``--overwrite`` (checked before anything is written), or on
            malformed input data (invalid UTF-8, a bad ``--srcdict``).
        ResourceError: a destdir that cannot be created or written.
        PreprocessInterrupted: Ctrl-C; the destdir holds the old data-bin, or the new one whole.
    """
    global _forking_workers, _main_pid
    _check_destdir_path(args.destdir)
    log = _RunLog()
    if os.path.isdir(args.destdir):
        log.open(args.destdir)
    _forking_workers, _main_pid = True, os.getpid()
    try:
        for line in recover_interrupted(args.destdir):
            logger.warning(line)
        planned = _validate(args)
        _check_destdir(args)
        _make_destdir(args.destdir)
        log.open(args.destdir)
        logger.info(args)
        try:
            _run(args, planned)
        except ValueError as err:  # bad input data (encoding, malformed dictionary, ...)
            raise PreprocessError(str(err)) from err
    except KeyboardInterrupt as err:
        if not isinstance(err, PreprocessInterrupted):
            signum = getattr(err, "signum", signal.SIGINT)  # a stop signal raised as Ctrl-C is
            err = PreprocessInterrupted(f"interrupted ({_SIGNAL_NAMES.get(signum, signum)}): --destdir "
                                        f"{args.destdir} is as it was (what this run had built is deleted)",
                                        signum)
        logger.warning(err.message)
        raise err from None
    finally:
        _forking_workers = False
        log.close()


def cli_main(argv: Optional[Sequence[str]] = None) -> None:
    """Console entry point ``fairseq-preprocess``: a user error ends with one line and exit
    status 2, Ctrl-C with one line and 130 (128 + SIGINT, as a shell reports it; 128 + the
    signal for SIGTERM and SIGHUP, which stop it the same way)."""
    from fairseq_cli.common import run_as_command

    run_as_command("fairseq-preprocess", _cli_main, argv)


def _cli_main(argv: Optional[Sequence[str]]) -> None:
    args = get_preprocessing_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        from fairseq_cli.common import setup_logging

        setup_logging()
    main(args)

if __name__ == "__main__":
    cli_main()
