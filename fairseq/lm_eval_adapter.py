"""The LM Evaluation Harness (``lm_eval``, the ``[eval]`` extra) on this package's checkpoints.

``lm_eval`` knows only the models registered when its command line runs, so this module
registers a model class under the name ``fairseq`` when it is imported, and running it runs
``lm_eval``'s own command line after that::

    python -m fairseq.lm_eval_adapter --model fairseq \\
        --model_args path=checkpoints/checkpoint_best.pt,data=data-bin --tasks TASK

In Python, ``import fairseq.lm_eval_adapter`` and then ``lm_eval.simple_evaluate(model="fairseq",
model_args={"path": ..., "data": ...}, tasks=[...])``, or pass a :class:`FairseqLM` object.

What each request type computes (natural logarithms, as lm_eval expects):

* ``loglikelihood(context, continuation)``: the sum of log p(token | everything before it) over
  the continuation's tokens, with the input starting as a document does in training (after an
  EOS; BOS EOS with ``task.add_bos_token``), and whether greedy decoding would produce exactly
  those tokens. A newline is the dictionary's EOS (each line of a preprocessed text ends with
  one), so ``"a\\nb"`` is ``a EOS b``. Inputs longer than the model's positions keep their end.
* ``loglikelihood_rolling(text)``: the text as ``fairseq-eval-lm`` scores a test split holding
  exactly that text: its lines, each ending in EOS, cut into blocks by the task's own
  ``TokenBlockDataset`` (``sample_break_mode``, ``tokens_per_sample``), each block scored with up
  to ``context_window`` tokens of the text before it (``LMContextWindowDataset``). The result is
  the total log-probability of all its tokens, EOS included: ``-(loss * ln 2 * ntokens)`` of
  ``fairseq-eval-lm`` on that text with the same ``--tokens-per-sample``,
  ``--sample-break-mode`` and ``--context-window`` (docs/lm_eval.md).
* ``generate_until(context, gen_kwargs)``: a continuation from :mod:`fairseq.sequence_generator`
  (greedy unless ``do_sample``), at most ``max_gen_toks`` tokens, cut before the first of the
  ``until`` strings; generation also stops at EOS (a newline).

Nothing in :mod:`fairseq` imports this module (it sits above the checkpoint and hub layers).
"""
import difflib
import logging
import math
import os
import sys
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from fairseq.errors import ConfigError, UserError
from fairseq.hf_validation import MissingPathError

logger = logging.getLogger(__name__)

MODEL_NAME = "fairseq"
INSTALL_HINT = "pip install -e '.[eval]' (or pip install lm-eval)"

try:
    from lm_eval.api.model import LM as _HarnessLM
except ImportError:  # the [eval] extra is not installed
    _HarnessLM = None

if _HarnessLM is None:
    if __name__ == "__main__":
        print(f"error: python -m fairseq.lm_eval_adapter needs the LM Evaluation Harness: {INSTALL_HINT}",
              file=sys.stderr)
        sys.exit(2)
    raise ImportError(f"fairseq.lm_eval_adapter needs the LM Evaluation Harness (lm_eval): {INSTALL_HINT}")

# settings of the adapter itself; the others it accepts are BPE/tokenizer config values
SETTINGS = ("path", "data", "batch_size", "max_batch_size", "device", "dtype", "max_gen_toks",
            "tokens_per_sample", "context_window", "sample_break_mode", "seed", "user_dir")
BPE_SETTINGS = ("bpe", "tokenizer", "gpt2_encoder_json", "gpt2_vocab_bpe", "bpe_vocab", "bpe_merges",
                "sentencepiece_model")
DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_GEN_TOKS = 256
DTYPES = {"float32": torch.float32, "float": torch.float32, "bfloat16": torch.bfloat16,
          "float16": torch.float16, "half": torch.float16}


def _int_setting(name: str, value: Any, minimum: int) -> int:
    try:
        number = int(value)
        ok = str(value).strip() == str(number) or isinstance(value, int)
    except (TypeError, ValueError):
        ok = False
    if not ok or number < minimum:
        raise ConfigError(f"--model_args {name}={value!r}: give an integer >= {minimum}")
    return number


class FairseqLM(_HarnessLM):
    """A language model of this package as an ``lm_eval`` model (registered as ``fairseq``).

    Args:
        path: the checkpoint (``NAME.pt``; a safetensors pair's ``NAME.pt`` or ``NAME.safetensors``;
            ``a.pt:b.pt`` for an ensemble, whose probabilities are averaged).
        data: the data directory with the ``dict.txt`` it was trained with (default: the
            checkpoint's own ``task.data``).
        batch_size: rows per forward pass (``--batch_size``; ``auto`` takes the default, 16).
        max_batch_size: an upper bound on ``batch_size``.
        device: ``cpu``, ``cuda``, ``cuda:1``, ... (default: ``cuda`` when available; ``cuda``
            where CUDA is not available runs on the CPU, with a warning).
        dtype: ``float32`` (default), ``bfloat16`` or ``float16``.
        max_gen_toks: the default most tokens ``generate_until`` adds (a task's
            ``max_gen_toks`` wins).
        tokens_per_sample, sample_break_mode, context_window: how a ``loglikelihood_rolling``
            text is cut into scored blocks, as ``fairseq-eval-lm``'s flags of those names
            (defaults: the checkpoint's ``task.tokens_per_sample`` and ``sample_break_mode``,
            and its ``eval_lm.context_window``, 0).
        seed: the seed of sampled generation (``do_sample``).
        user_dir: a plugin directory to import first (never the checkpoint's own).
        **bpe: BPE and tokenizer settings (``bpe=gpt2``, ``gpt2_encoder_json=...``) when the
            checkpoint does not record them; files beside the checkpoint are found as
            ``from_pretrained`` finds them.

    Raises:
        ConfigError: an unknown or bad setting; MissingPathError (a ConfigError and a
            FileNotFoundError): ``path`` or ``data`` does not exist; CheckpointError: an
            unreadable checkpoint.
    """

    def __init__(self, path: Optional[str] = None, data: Optional[str] = None, batch_size: Any = None,
                 max_batch_size: Any = None, device: Optional[str] = None, dtype: Optional[str] = None,
                 max_gen_toks: Any = DEFAULT_MAX_GEN_TOKS, tokens_per_sample: Any = None,
                 context_window: Any = None, sample_break_mode: Optional[str] = None,
                 seed: Any = None, user_dir: Optional[str] = None, **bpe: Any) -> None:
        super().__init__()
        from fairseq import checkpoint_utils
        from fairseq.hub_utils import GeneratorHubInterface, from_pretrained

        unknown = [k for k in bpe if k not in BPE_SETTINGS]
        if unknown:
            hint = difflib.get_close_matches(unknown[0], list(SETTINGS + BPE_SETTINGS), n=1)
            raise ConfigError(f"--model_args {unknown[0]}=...: no such setting of the fairseq model"
                              + (f"; did you mean {hint[0]!r}?" if hint else "")
                              + f" Settings: {', '.join(SETTINGS + BPE_SETTINGS)}")
        if not path:
            raise ConfigError("--model_args path=CHECKPOINT is required (e.g. --model_args "
                              "path=checkpoints/checkpoint_best.pt,data=data-bin)")
        paths = [os.path.abspath(p) for p in str(path).split(os.pathsep)]
        for given in paths:  # a missing file is the user's mistake (exit 2), not a failed load
            if not os.path.exists(given):
                raise MissingPathError(f"--model_args path={given} does not exist: give the checkpoint file (e.g. "
                                       "path=checkpoints/checkpoint_best.pt)")
        if data and not os.path.isdir(str(data)):
            what = "is not a directory" if os.path.exists(str(data)) else "does not exist"
            raise MissingPathError(f"--model_args data={data} {what}: give the data directory with the dict.txt "
                                   "the model was trained with, or leave data out to use the checkpoint's own")
        overrides: Dict[str, Any] = {k: v for k, v in bpe.items() if v is not None}
        if user_dir:
            overrides["user_dir"] = str(user_dir)
        if data:
            # from_pretrained: BPE files beside the checkpoint are found, data taken as given
            model_dir = os.path.dirname(paths[0])
            names = os.pathsep.join(os.path.relpath(p, model_dir) for p in paths)
            loaded = from_pretrained(model_dir, checkpoint_file=names,
                                     data_name_or_path=os.path.abspath(str(data)), **overrides)
        else:  # the data directory the checkpoint's config records
            models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(paths, arg_overrides=overrides)
            loaded = {"cfg": cfg, "task": task, "models": models}
        self.hub = GeneratorHubInterface(loaded["cfg"], loaded["task"], loaded["models"], **overrides)
        self.cfg, self.task = loaded["cfg"], loaded["task"]
        self.models = list(self.hub.models)
        if device is None or str(device).lower() in ("", "none"):
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif str(device).startswith("cuda") and not torch.cuda.is_available():
            # lm_eval's command line asks for cuda unless told otherwise
            logger.warning("device %s: CUDA is not available here; running on the CPU", device)
            device = "cpu"
        try:
            self._device = torch.device(str(device))
        except RuntimeError as e:
            raise ConfigError(f"--device {device!r}: {e}") from None
        if dtype is not None and str(dtype) not in DTYPES and str(dtype) != "auto":
            raise ConfigError(f"--model_args dtype={dtype!r}: give one of {', '.join(DTYPES)}")
        self.hub.to(self._device)
        if dtype is not None and str(dtype) != "auto":
            self.hub.to(DTYPES[str(dtype)])
        self.hub.eval()

        self.batch_size = self._batch_size(batch_size, max_batch_size)
        self.max_gen_toks = _int_setting("max_gen_toks", max_gen_toks, 1)
        self.seed = None if seed is None else _int_setting("seed", seed, 0)
        self.src_dict, self.tgt_dict = self.hub.src_dict, self.hub.tgt_dict
        self.pad, self.eos = self.src_dict.pad(), self.src_dict.eos()
        self.add_bos_token = bool(self.hub.add_bos_token)
        self.max_length = int(self.hub.max_positions) if self.hub.max_positions is not None else 1 << 20
        task_cfg = self.cfg.task
        trained = int(task_cfg.get("tokens_per_sample") or self.max_length)  # optional: a task other than language_modeling (a plugin's) may have no tokens_per_sample
        self.tokens_per_sample = trained if tokens_per_sample is None else \
            _int_setting("tokens_per_sample", tokens_per_sample, 1)
        saved_window = self.cfg.eval_lm.context_window
        self.context_window = int(saved_window or 0) if context_window is None else \
            _int_setting("context_window", context_window, 0)
        # optional: sample_break_mode belongs to language_modeling; a plugin task may lack it
        self.sample_break_mode = str(sample_break_mode or task_cfg.get("sample_break_mode") or "none")
        self._check_rolling_settings()

    # -- settings ------------------------------------------------------------------------------
    @staticmethod
    def _batch_size(batch_size: Any, max_batch_size: Any) -> int:
        if batch_size is None or str(batch_size).startswith("auto"):
            size = DEFAULT_BATCH_SIZE
        else:
            size = _int_setting("batch_size", batch_size, 1)
        if max_batch_size is not None:
            size = min(size, _int_setting("max_batch_size", max_batch_size, 1))
        return size

    def _check_rolling_settings(self) -> None:
        from fairseq.data.token_block_dataset import BREAK_MODES

        if self.sample_break_mode not in BREAK_MODES:
            raise ConfigError(f"--model_args sample_break_mode={self.sample_break_mode!r}: give one of "
                              f"{', '.join(BREAK_MODES)}")
        if self.tokens_per_sample > self.max_length:
            raise ConfigError(f"--model_args tokens_per_sample={self.tokens_per_sample} exceeds the model's "
                              f"{self.max_length} positions: give {self.max_length} or less")
        if self.context_window >= self.tokens_per_sample:
            raise ConfigError(f"--model_args context_window={self.context_window} leaves no new tokens in "
                              f"blocks of tokens_per_sample={self.tokens_per_sample}: give less than "
                              f"{self.tokens_per_sample}")
        if self._block_size() < 1:
            raise ConfigError(f"--model_args tokens_per_sample={self.tokens_per_sample} leaves no token per "
                              "block after the context window and BOS")

    @property
    def device(self) -> torch.device:
        return self._device

    # -- text -> tokens ------------------------------------------------------------------------
    def _line_tokens(self, line: str) -> List[int]:
        """One line's ids, without EOS (tokenizer, BPE, dictionary: ``hub.encode``)."""
        ids = self.hub.encode(line).tolist()
        return ids[:-1] if ids and ids[-1] == self.eos else ids

    def encode(self, text: str, final_eos: bool = False) -> List[int]:
        """``text``'s ids, every newline an EOS (as each line of a preprocessed file ends in one);
        ``final_eos`` ends the last line with EOS too, as a line of a file is."""
        lines = text.replace("\r\n", "\n").split("\n")
        ids: List[int] = []
        for i, line in enumerate(lines):
            ids.extend(self._line_tokens(line))
            if i < len(lines) - 1 or final_eos:
                ids.append(self.eos)
        return ids

    def document_lines(self, text: str) -> List[torch.Tensor]:
        """``text`` as ``fairseq-preprocess`` binarizes a file holding it: one tensor per line,
        each ending in EOS (a final newline adds no empty line)."""
        text = text.replace("\r\n", "\n")
        if text.endswith("\n"):
            text = text[:-1]
        if not text:
            return []
        return [torch.tensor(self._line_tokens(line) + [self.eos], dtype=torch.long)
                for line in text.split("\n")]

    def _prefix(self) -> List[int]:
        """What precedes a document's first token in training: EOS (BOS EOS with add_bos_token)."""
        return ([self.src_dict.bos()] if self.add_bos_token else []) + [self.eos]

    def _split_pair(self, context: str, continuation: str) -> Tuple[List[int], List[int]]:
        """The ids of ``context`` and of ``continuation`` after it; spaces ending the context
        belong to the continuation."""
        stripped = context.rstrip(" ")
        continuation = context[len(stripped):] + continuation
        context = stripped
        whole = self.encode(context + continuation)
        head = self.encode(context) if context else []
        if whole[:len(head)] == head:
            return head, whole[len(head):]
        return head, self.encode(continuation)

    # -- the scorer ------------------------------------------------------------------------------
    @torch.no_grad()
    def _log_probs(self, src: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B, T, V) log-probabilities of the next token after every position of ``src``
        (an ensemble's probabilities averaged, as ``fairseq-eval-lm`` averages them)."""
        src = src.to(self._device)
        lengths = src.ne(self.pad).long().sum(dim=1)
        sample = {"net_input": {"src_tokens": src, "src_lengths": lengths}, "target": target.to(self._device)}
        total = None
        for model in self.models:
            out = model(**sample["net_input"])
            lp = model.get_normalized_probs(out, log_probs=True, sample=sample).float()
            total = lp if total is None else torch.logaddexp(total, lp)
        assert total is not None
        if len(self.models) > 1:
            total = total - math.log(len(self.models))
        return total

    def score_rows(self, rows: Sequence[Tuple[Sequence[int], Sequence[int]]]) -> List[Tuple[float, bool, int]]:
        """Score rows ``(input ids, target ids)`` of equal lengths, the target ``pad`` where a
        position is not scored, in batches of ``batch_size`` rows of similar length.

        Returns:
            For each row: the sum of the log-probabilities of its scored targets (natural log,
            accumulated in float64), whether each is the most likely token there, and how many.
        """
        results: List[Optional[Tuple[float, bool, int]]] = [None] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
        for start in range(0, len(order), self.batch_size):
            chosen = order[start:start + self.batch_size]
            width = max(len(rows[i][0]) for i in chosen)
            src = torch.full((len(chosen), width), self.pad, dtype=torch.long)
            tgt = torch.full((len(chosen), width), self.pad, dtype=torch.long)
            for j, i in enumerate(chosen):
                inp, out = rows[i]
                src[j, :len(inp)] = torch.as_tensor(list(inp), dtype=torch.long)
                tgt[j, :len(out)] = torch.as_tensor(list(out), dtype=torch.long)
            lprobs = self._log_probs(src, tgt).cpu()
            for j, i in enumerate(chosen):
                keep = tgt[j].ne(self.pad)
                if not bool(keep.any()):
                    results[i] = (0.0, True, 0)
                    continue
                row = lprobs[j][keep]  # (n, V)
                wanted = tgt[j][keep]
                scores = row.gather(1, wanted.unsqueeze(1)).squeeze(1)
                greedy = bool(row.argmax(dim=1).eq(wanted).all())
                results[i] = (float(scores.double().sum()), greedy, int(keep.sum()))
        return results  # type: ignore[return-value]

    # -- lm_eval's three requests ------------------------------------------------------------------
    def loglikelihood(self, requests: List[Any], disable_tqdm: bool = False) -> List[Tuple[float, bool]]:
        """For each ``(context, continuation)``: ``(sum of the continuation's log-probabilities,
        whether greedy decoding produces it)``."""
        rows = []
        for request in requests:
            context, continuation = request.args[0], request.args[1]
            head, tail = self._split_pair(context, continuation)
            if not tail:
                rows.append(([self.eos], [self.pad]))
                continue
            tokens = self._prefix() + head + tail
            inp, out = tokens[:-1], tokens[1:]
            if len(inp) > self.max_length:  # keep the end: the continuation and what precedes it
                inp, out = inp[-self.max_length:], out[-self.max_length:]
            scored = min(len(tail), len(out))
            rows.append((inp, [self.pad] * (len(out) - scored) + out[len(out) - scored:]))
        results = []
        for request, (score, greedy, _) in zip(requests, self.score_rows(rows)):
            results.append((score, greedy))
            self.cache_hook.add_partial("loglikelihood", request.args, (score, greedy))
        return results

    def rolling_rows(self, text: str) -> List[Tuple[List[int], List[int]]]:
        """The rows ``fairseq-eval-lm`` scores for a test split holding exactly ``text``: its
        blocks (``TokenBlockDataset`` with this model's break mode and block size) as the task
        collates them (``MonolingualDataset``), with up to ``context_window`` tokens before each
        (``LMContextWindowDataset``); targets before a row's own tokens are padding. A block
        longer than the model's positions (a long line with ``sample_break_mode=eos``) is left
        out with a warning, as ``fairseq-eval-lm`` leaves it out."""
        from fairseq.data.lm_context_window_dataset import LMContextWindowDataset
        from fairseq.data.monolingual_dataset import MonolingualDataset
        from fairseq.data.token_block_dataset import TokenBlockDataset

        lines = self.document_lines(text)
        if not lines:
            return []
        sizes = np.array([len(t) for t in lines], dtype=np.int64)
        blocks = TokenBlockDataset(lines, sizes, self._block_size(), pad=self.pad, eos=self.eos,
                                   break_mode=self.sample_break_mode, include_targets=True)
        samples = MonolingualDataset(
            blocks, blocks.sizes, self.src_dict, self.tgt_dict,
            add_eos_for_other_targets=self.sample_break_mode != "none", shuffle=False,
            targets=list(getattr(self.task, "targets", None) or ["future"]), add_bos_token=self.add_bos_token)
        dataset: Any = samples
        if self.context_window > 0:
            dataset = LMContextWindowDataset(samples, tokens_per_sample=self.tokens_per_sample - self.context_window,
                                             context_window=self.context_window, pad_idx=self.pad)
        rows = []
        bos = self.tgt_dict.bos()
        skipped = 0
        for i in range(len(samples)):
            if samples.size(i) > self.max_length:  # as fairseq-eval-lm's batches skip it
                skipped += 1
                continue
            batch = dataset.collater([samples[i]])
            src = batch["net_input"]["src_tokens"][0]
            tgt = batch["target"][0].clone()
            start = (batch.get("start_indices") or [0])[0]
            tgt[:start] = self.pad
            scored = tgt.ne(self.pad).nonzero()
            if self.add_bos_token and len(scored) and int(tgt[scored[0, 0]]) == bos:
                tgt[scored[0, 0]] = self.pad  # fairseq-eval-lm does not score a leading BOS target
            rows.append((src.tolist(), tgt.tolist()))
        if skipped:
            logger.warning("%d of %d blocks of a text are longer than the model's %d positions and are not "
                           "scored, as fairseq-eval-lm skips them (sample_break_mode=%s keeps lines whole; "
                           "sample_break_mode=none scores every token)", skipped, len(samples),
                           self.max_length, self.sample_break_mode)
        return rows

    def _block_size(self) -> int:
        tokens = self.tokens_per_sample - (self.context_window if self.context_window > 0 else 0)
        return tokens - (1 if self.add_bos_token else 0)

    def rolling_scores(self, texts: Sequence[str]) -> List[Tuple[float, int]]:
        """For each text: ``(total log-probability of its tokens, how many)``, EOS included
        (see :meth:`rolling_rows`); ``exp(-total / count)`` is its token perplexity, the
        ``Perplexity`` that ``fairseq-eval-lm`` prints for it."""
        rows, owner = [], []
        for k, text in enumerate(texts):
            for row in self.rolling_rows(text):
                rows.append(row)
                owner.append(k)
        totals = [0.0] * len(texts)
        counts = [0] * len(texts)
        for k, (score, _, n) in zip(owner, self.score_rows(rows)):
            totals[k] += score
            counts[k] += n
        return list(zip(totals, counts))

    def loglikelihood_rolling(self, requests: List[Any], disable_tqdm: bool = False) -> List[float]:
        """For each text: the total log-probability of its tokens, scored as ``fairseq-eval-lm``
        scores a file holding that text (see the module docstring)."""
        texts = [request.args[0] for request in requests]
        results = []
        for request, (score, _) in zip(requests, self.rolling_scores(texts)):
            results.append(score)
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, score)
        return results

    def generate_until(self, requests: List[Any], disable_tqdm: bool = False) -> List[str]:
        """For each ``(context, gen_kwargs)``: the text the model continues ``context`` with, up
        to the first of ``gen_kwargs["until"]`` (not included), at most ``max_gen_toks`` tokens."""
        jobs = []
        for index, request in enumerate(requests):
            context, kwargs = request.args[0], dict(request.args[1] or {})
            until = kwargs.pop("until", None)
            until = [until] if isinstance(until, str) else list(until or [])
            max_gen = _int_setting("max_gen_toks", kwargs.pop("max_gen_toks", self.max_gen_toks), 1)
            options = self._generation_options(kwargs)
            prompt, max_gen = self._fit_prompt(self.encode(context), max_gen)
            jobs.append((index, prompt, max_gen, until, options))
        results: List[str] = [""] * len(requests)
        # one batch holds prompts of one length and settings: every prompt token is then fed at
        # once (an EOS inside a prompt, a newline, is context, never the end of a hypothesis)
        groups: Dict[Any, List[Any]] = {}
        for job in jobs:
            groups.setdefault((len(job[1]), job[2], tuple(sorted(job[4].items()))), []).append(job)
        for (length, max_gen, items), group in groups.items():
            options = dict(items)
            for start in range(0, len(group), self.batch_size):
                batch = group[start:start + self.batch_size]
                texts = self._generate([job[1] for job in batch], max_gen, options)
                for job, text in zip(batch, texts):
                    results[job[0]] = _cut(text, job[3])
        for request, text in zip(requests, results):
            self.cache_hook.add_partial("generate_until", request.args, text)
        return results

    def _generation_options(self, kwargs: Dict[str, Any]) -> Dict[str, Any]:
        """lm_eval's generation keywords as this package's generation settings (greedy unless
        ``do_sample``; ``temperature`` 0 means greedy)."""
        sample = bool(kwargs.pop("do_sample", False))
        temperature = float(kwargs.pop("temperature", 1.0) or 0.0)
        top_k = int(kwargs.pop("top_k", 0) or 0)
        top_p = float(kwargs.pop("top_p", 0.0) or 0.0)
        if temperature == 0.0:
            sample = False
        # every setting given, so that a generation group saved with the checkpoint changes nothing
        options: Dict[str, Any] = {"sampling": sample, "temperature": 1.0, "sampling_topk": -1,
                                   "sampling_topp": -1.0, "no_repeat_ngram_size": 0, "unkpen": 0.0,
                                   "lenpen": 1.0, "unnormalized": False}
        if sample:
            options.update(temperature=temperature, sampling_topk=top_k if top_k > 0 else -1,
                           sampling_topp=top_p if 0.0 < top_p < 1.0 else -1.0)
        if kwargs:
            logger.warning("generation keywords not used by the fairseq model: %s", ", ".join(sorted(kwargs)))
        return options

    def _fit_prompt(self, prompt: List[int], max_gen: int) -> Tuple[List[int], int]:
        """The prompt's end and the number of new tokens that fit the model's positions (one
        of which is the BOS/EOS the generator starts with)."""
        room = self.max_length - 1
        if len(prompt) + max_gen <= room:
            return prompt, max_gen
        keep = max(room - max_gen, min(len(prompt), room // 2))
        prompt = prompt[len(prompt) - keep:] if keep > 0 else []
        return prompt, max(1, min(max_gen, room - len(prompt)))

    @torch.no_grad()
    def _generate(self, prompts: List[List[int]], max_gen: int, options: Dict[str, Any]) -> List[str]:
        from fairseq.sequence_generator import build_generator

        length = len(prompts[0])
        settings = self.hub.generation_options(beam=1, nbest=1, max_len_a=0, max_len_b=length + max_gen,
                                               min_len=1, seed=self.seed, **options)
        generator = None
        if settings["seed"] is not None:
            generator = torch.Generator(device=self._device).manual_seed(int(settings["seed"]))
        worker = build_generator(self.models, settings, self.tgt_dict, generator)
        bos = self.src_dict.bos() if self.add_bos_token else self.eos
        src = torch.full((len(prompts), length + 1), bos, dtype=torch.long)
        for j, prompt in enumerate(prompts):
            src[j, 1:] = torch.as_tensor(prompt, dtype=torch.long)
        src = src.to(self._device)
        sample = {"net_input": {"src_tokens": src,
                                "src_lengths": torch.full((len(prompts),), length + 1, device=self._device)}}
        hypos = worker.generate(self.models, sample, prefix_tokens=src[:, 1:] if length else None, bos_token=bos)
        texts = []
        for prompt, hyps in zip(prompts, hypos):
            tokens = hyps[0]["tokens"].cpu().tolist()
            new = tokens[len(prompt):]
            if new and new[-1] == self.eos:
                new = new[:-1]
            texts.append(self._continuation_text(prompt, new[:max_gen]))
        return texts

    def _continuation_text(self, prompt: List[int], new: List[int]) -> str:
        """The text ``new`` adds after ``prompt`` (with the space a word-level model puts before
        a word: the decoded whole minus the decoded prompt)."""
        if not new:
            return ""
        whole = self.hub.decode(torch.tensor(prompt + new, dtype=torch.long))
        head = self.hub.decode(torch.tensor(prompt, dtype=torch.long)) if prompt else ""
        if head and whole.startswith(head):
            return whole[len(head):]
        text = self.hub.decode(torch.tensor(new, dtype=torch.long))
        return " " + text if prompt and text and not text[0].isspace() else text


def _cut(text: str, until: Iterable[str]) -> str:
    """``text`` up to the first occurrence of any of ``until``."""
    end = len(text)
    for stop in until:
        if stop:
            found = text.find(stop)
            if 0 <= found < end:
                end = found
    return text[:end]


def register() -> None:
    """Register :class:`FairseqLM` in lm_eval's model registry as ``fairseq`` (again: no-op)."""
    from lm_eval.api import registry

    if hasattr(registry, "model_registry"):  # lm_eval >= 0.4.10
        current = registry.model_registry.get(MODEL_NAME, None)
    else:
        current = getattr(registry, "MODEL_REGISTRY", {}).get(MODEL_NAME)
    if current is FairseqLM:
        return
    if current is not None and getattr(current, "__qualname__", None) == FairseqLM.__qualname__ \
            and getattr(current, "__module__", None) == FairseqLM.__module__:
        return
    registry.register_model(MODEL_NAME)(FairseqLM)


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m fairseq.lm_eval_adapter ARGS``: lm_eval's command line (``lm_eval ARGS``)
    with the ``fairseq`` model registered. A user error of this package (a missing checkpoint, a
    bad setting) ends it with one line and its exit code."""
    from lm_eval.__main__ import cli_evaluate

    register()
    saved = list(sys.argv)
    if argv is not None:
        sys.argv = ["lm_eval"] + list(argv)
    try:
        cli_evaluate()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except ValueError as e:
        # lm_eval's own refusal of a task name ends in its traceback; the same line without it
        if not str(e).startswith("Tasks not found"):
            raise
        print(f"error: --tasks: {e}; `lm-eval ls tasks` lists the tasks, and --include_path DIR "
              "adds a directory of task YAML files", file=sys.stderr)
        return 2
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    # the module registered is the importable one (this run of the file is a second copy)
    from fairseq.lm_eval_adapter import main as _main

    sys.exit(_main())
else:
    register()
