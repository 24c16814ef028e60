"""Generation from language models: greedy, beam search and sampling, with the KV cache.

``SequenceGenerator`` keeps fairseq's constructor and ``generate(models, sample, prefix_tokens,
bos_token)`` result: for each sentence, a best-first list of hypotheses
``{"tokens", "score", "positional_scores", "alignment", "attention"}``, where ``tokens`` exclude the
leading BOS and end in EOS, ``positional_scores`` are each token's log-probability (natural log)
and ``score`` their sum divided by ``len(tokens) ** lenpen``.

The loop is small: a forward for the new column of tokens (the whole common prompt at once on the
first step), one :func:`next_token_lprobs` call that applies every constraint, a search strategy
that proposes candidates, and bookkeeping that finalizes EOS candidates and keeps K alive.
Prompts of different lengths are forced token by token row by row (``prefix_tokens``, padded on
the right), as fairseq does.
"""
import dataclasses
import functools
import logging
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from fairseq.dataclass.configs import GenerationConfig
from fairseq.dataclass.values import field_default
from fairseq.errors import ConfigError
from fairseq.search import BeamSearch, Sampling, Search

Hypothesis = Dict[str, Any]

logger = logging.getLogger(__name__)


class EnsembleModel(torch.nn.Module):
    """One or more language models decoded together: their probabilities are averaged.

    Each model keeps its own decoding cache (``incremental_states[i]``).
    """

    def __init__(self, models: Sequence[torch.nn.Module]):
        super().__init__()
        self.models = torch.nn.ModuleList(models)
        self.incremental_states: List[Dict[str, Any]] = [{} for _ in models]

    def max_decoder_positions(self) -> int:
        limits = [m.max_decoder_positions() for m in self.models
                  if hasattr(m, "max_decoder_positions") and m.max_decoder_positions() is not None]
        return min(limits) if limits else 1_000_000

    def reset(self) -> None:
        self.incremental_states = [{} for _ in self.models]

    def forward_decoder(self, tokens: Tensor, use_cache: bool) -> Tensor:
        """Log-probabilities (N, T, V) of the next token after each of ``tokens``' positions.

        With ``use_cache``, ``tokens`` are only the positions new since the last call.
        """
        outputs = []
        for model, state in zip(self.models, self.incremental_states):
            net_output = model(tokens, incremental_state=state if use_cache else None)
            outputs.append(model.get_normalized_probs(net_output, log_probs=True).float())
        if len(outputs) == 1:
            return outputs[0]
        return torch.logsumexp(torch.stack(outputs), dim=0) - math.log(len(outputs))

    def reorder(self, new_order: Tensor) -> None:
        """Row ``b`` of every model's cache becomes old row ``new_order[b]`` (this package's
        decoder reorders its attention caches in place)."""
        for model, state in zip(self.models, self.incremental_states):
            model.reorder_incremental_state(state, new_order)

# the arguments already warned about: an argument that changes nothing is said once per process,
# not at every generator built in a loop
_warned_no_effect: set = set()


def _warn_no_effect(argument: str, why: str) -> None:
    if argument not in _warned_no_effect:
        _warned_no_effect.add(argument)
        logger.warning("%s has no effect: %s", argument, why)


class SequenceGenerator(torch.nn.Module):
    """Generate continuations of prompts with a language model (or an ensemble of them).

    Args:
        models: the models (an ensemble averages their probabilities).
        tgt_dict: the vocabulary (its ``pad``, ``unk`` and ``eos`` are used).
        beam_size: hypotheses kept per prompt (with sampling: samples drawn per prompt).
        max_len_a, max_len_b: generate at most ``max_len_a * prompt_width + max_len_b`` tokens
            (prompt included), and never more than the model's positions allow.
        max_len: the model-position limit to use instead of the model's own.
        min_len: no EOS before this many tokens.
        normalize_scores: divide a hypothesis' score by its length ** ``len_penalty``.
        len_penalty: < 1 favours shorter, > 1 longer hypotheses.
        unk_penalty: subtracted from the log-probability of ``<unk>``.
        temperature: divides the logits (< 1 sharper, > 1 flatter); must be > 0.
        no_repeat_ngram_size: never repeat an n-gram of this size (0: allowed).
        search_strategy: a :class:`fairseq.search.Search`; beam search by default.
        eos: the end token (default: the dictionary's).
        symbols_to_strip_from_output: accepted for fairseq's signature; hypotheses keep every
            symbol here (one warning when it is given).
        use_cache: decode incrementally with the models' key/value caches (the default); without
            it, every step re-runs the whole sequence, which gives the same tokens, slower.
    """

    #: run a sentence's common prompt through the model for one of its K rows, then widen the
    #: caches (False: for all K rows, as fairseq does; the same hypotheses, with log-probabilities
    #: equal within float rounding, since the matrix products see fewer rows)
    shared_prompt_forward = True

    def __init__(self, models: Sequence[torch.nn.Module], tgt_dict: Any, beam_size: int = 1,
                 max_len_a: float = 0, max_len_b: int = 200, max_len: int = 0, min_len: int = 1,
                 normalize_scores: bool = True, len_penalty: float = 1.0, unk_penalty: float = 0.0,
                 temperature: float = 1.0, match_source_len: bool = False,
                 no_repeat_ngram_size: int = 0, search_strategy: Optional[Search] = None,
                 eos: Optional[int] = None, symbols_to_strip_from_output: Any = None,
                 lm_model: Any = None, lm_weight: float = 1.0, use_cache: bool = True):
        super().__init__()
        if beam_size < 1:
            raise ValueError(f"beam={beam_size}: give at least 1")
        if temperature <= 0:
            raise ValueError(f"temperature={temperature}: give a value > 0")
        if match_source_len or lm_model is not None:
            raise ValueError("match_source_len and lm_model apply to translation, which this "
                             "project does not implement")
        if symbols_to_strip_from_output is not None:
            _warn_no_effect("SequenceGenerator(symbols_to_strip_from_output=...)",
                            "hypotheses keep every symbol; strip them from the output yourself")
        self.model = models if isinstance(models, EnsembleModel) else EnsembleModel(models)
        self.tgt_dict = tgt_dict
        self.pad, self.unk = tgt_dict.pad(), tgt_dict.unk()
        self.eos = tgt_dict.eos() if eos is None else eos
        self.vocab_size = len(tgt_dict)
        self.beam_size = beam_size
        self.max_len_a, self.max_len_b = max_len_a, max_len_b
        self.min_len = min_len
        self.max_len = max_len or self.model.max_decoder_positions()
        self.normalize_scores = normalize_scores
        self.len_penalty = len_penalty
        self.unk_penalty = unk_penalty
        self.temperature = temperature
        self.no_repeat_ngram_size = no_repeat_ngram_size
        self.search = search_strategy or BeamSearch(tgt_dict)
        # a strategy that only has select() (not derived from Search) gets the generic look-up
        self._select = getattr(self.search, "select_with_lprobs", None) or functools.partial(
            Search.select_with_lprobs, self.search)
        self.use_cache = use_cache

    @torch.no_grad()
    def forward(self, sample: Dict[str, Any], prefix_tokens: Optional[Tensor] = None,
                bos_token: Optional[int] = None) -> List[List[Hypothesis]]:
        return self._generate(sample, prefix_tokens, bos_token)

    @torch.no_grad()
    def generate(self, models: Any, sample: Dict[str, Any], prefix_tokens: Optional[Tensor] = None,
                 bos_token: Optional[int] = None, **kwargs: Any) -> List[List[Hypothesis]]:
        """Generate for every sentence of ``sample`` (``models`` is accepted for fairseq's
        signature; the generator's own models are used)."""
        return self._generate(sample, prefix_tokens, bos_token)

    # -- the steps -----------------------------------------------------------------------------
    def max_new_length(self, src_width: int) -> int:
        """How many tokens (prompt included, EOS excluded) a hypothesis may have."""
        max_len = min(int(self.max_len_a * src_width + self.max_len_b), self.max_len - 1)
        if self.min_len > max_len:
            raise GenerationSettingError(
                f"generation.min_len={self.min_len} (--min-len) is more than the longest output for "
                f"prompts {src_width} wide: {max_len} tokens (max_len_a={self.max_len_a} * width + "
                f"max_len_b={self.max_len_b}, within the model's {self.max_len} positions); give "
                f"--min-len {max_len} or less, or a larger --max-len-a / --max-len-b")
        return max_len

    def next_token_lprobs(self, lprobs: Tensor, tokens: Tensor, step: int, max_len: int,
                          forced: Optional[Tensor], inplace: bool = False) -> Tensor:
        """Apply every constraint to the (N, V) log-probabilities of step ``step``.

        Args:
            tokens: (N, step + 1) tokens so far, BOS first.
            forced: (N,) the prompt token each row must take at this step, pad where free.
            inplace: change ``lprobs`` itself (the decoding loop owns them) instead of a copy.
        """
        if not inplace:
            lprobs = lprobs.clone()
        lprobs[:, self.pad] = float("-inf")
        if self.unk_penalty:  # x - 0 is x: no pass at all without a penalty
            lprobs[:, self.unk] -= self.unk_penalty
        if step >= max_len:  # out of room: only EOS
            eos_lp = lprobs[:, self.eos].clone()
            lprobs.fill_(float("-inf"))
            lprobs[:, self.eos] = eos_lp
            return lprobs
        if forced is None:  # every row is free: plain column writes, no row mask
            if step < self.min_len:
                lprobs[:, self.eos] = float("-inf")
            if self.no_repeat_ngram_size > 0:
                self._block_repeated_ngrams(lprobs, tokens, None)
            return lprobs
        free = forced.eq(self.pad)
        if step < self.min_len:
            lprobs[free, self.eos] = float("-inf")
        if self.no_repeat_ngram_size > 0:
            self._block_repeated_ngrams(lprobs, tokens, free)
        if not bool(free.all()):
            rows = (~free).nonzero().squeeze(1)
            kept = lprobs[rows, forced[rows]]
            lprobs[rows] = float("-inf")
            lprobs[rows, forced[rows]] = kept
        return lprobs

    def _block_repeated_ngrams(self, lprobs: Tensor, tokens: Tensor, free: Optional[Tensor]) -> None:
        n = self.no_repeat_ngram_size
        if tokens.size(1) < n:
            return
        history = tokens.tolist()
        free_rows = [True] * len(history) if free is None else free.tolist()
        for row, seq in enumerate(history):
            if not free_rows[row]:
                continue
            tail = tuple(seq[len(seq) - n + 1:]) if n > 1 else ()
            banned = [seq[i + n - 1] for i in range(len(seq) - n + 1) if tuple(seq[i:i + n - 1]) == tail]
            if banned:
                lprobs[row, banned] = float("-inf")

    def _generate(self, sample: Dict[str, Any], prefix_tokens: Optional[Tensor],
                  bos_token: Optional[int]) -> List[List[Hypothesis]]:
        src_tokens = sample["net_input"]["src_tokens"]
        bsz, src_width = src_tokens.shape[:2]
        K = self.beam_size
        device = src_tokens.device
        max_len = self.max_new_length(src_width)
        check_generation_memory(bsz, K, self.vocab_size, max_len, device)
        self.model.reset()

        # (N = bsz * K) rows: sentence b's hypotheses are rows b*K .. b*K+K-1
        tokens = src_tokens.new_full((bsz * K, max_len + 2), self.pad)
        tokens[:, 0] = self.eos if bos_token is None else bos_token
        pos_scores = torch.zeros(bsz * K, max_len + 1, device=device)
        scores = torch.zeros(bsz, K, device=device)
        if isinstance(self.search, BeamSearch):
            scores[:, 1:] = float("-inf")  # identical beams: only the first is alive at first
        prefix = None
        if prefix_tokens is not None and prefix_tokens.numel() > 0:
            prefix = prefix_tokens[:, :max_len].repeat_interleave(K, dim=0)  # (N, P)
        # a prompt token forced in every row at once can go through the model in one forward
        common = 0
        if prefix is not None and self.use_cache:
            common = int(prefix.ne(self.pad).long().cumprod(dim=1).sum(dim=1).min())
            tokens[:, 1:common + 1] = prefix[:, :common]

        finalized: List[List[Hypothesis]] = [[] for _ in range(bsz)]
        done = torch.zeros(bsz, dtype=torch.bool, device=device)
        # the first forward: BOS, and with the cache the whole common prompt at once. A
        # sentence's K rows are identical up to there: with the cache, its first row goes
        # through the model alone and the caches are then widened to K rows per sentence
        once = K > 1 and self.use_cache and self.shared_prompt_forward
        rows = slice(None, None, K) if once else slice(None)  # each sentence's first row, or all

        def widen(t: Tensor) -> Tensor:  # one row per sentence -> its K rows (a copy)
            return t.repeat_interleave(K, dim=0) if once else t

        all_lprobs = self.model.forward_decoder(tokens[rows, :common + 1], self.use_cache)
        if once:
            self.model.reorder(torch.arange(bsz, device=device).repeat_interleave(K))
        step_lprobs = widen(all_lprobs[:, -1])  # (N, V)
        if common > 0:
            prompt_lp = widen(all_lprobs[:, :common].gather(2, prefix[rows, :common].unsqueeze(2)).squeeze(2))
            pos_scores[:, :common] = prompt_lp  # (N, common)
            scores = scores + prompt_lp.sum(dim=1).view(bsz, K)
        return self._continue(common, max_len, tokens, pos_scores, scores, prefix, finalized,
                              done, step_lprobs)

    def _continue(self, step: int, max_len: int, tokens: Tensor, pos_scores: Tensor,
                  scores: Tensor, prefix: Optional[Tensor], finalized: List[List[Hypothesis]],
                  done: Tensor, step_lprobs: Tensor) -> List[List[Hypothesis]]:
        """The decoding loop from ``step`` on, given that step's raw log-probabilities.

        A step where no sentence still decoding has an EOS or a dead (-inf) candidate among its
        best K, the usual case, keeps those K as they are: no finalization, no sorting, one
        host sync. Any other step takes :meth:`_finalize_and_keep`."""
        bsz, K = scores.shape
        N = bsz * K
        V = step_lprobs.size(-1)
        device = tokens.device
        first_rows = torch.arange(0, N, K, device=device).unsqueeze(1)  # (bsz, 1)
        identity = torch.arange(N, device=device)
        done_list: List[bool] = [bool(x) for x in done.tolist()]
        done_rows = done.nonzero().squeeze(1)  # the finished sentences, kept at -inf
        while True:
            forced = None
            if prefix is not None and step < prefix.size(1):
                forced = prefix[:, step]
            # step_lprobs are this loop's own (a fresh output of the model): constrained in place
            lprobs = step_lprobs
            if self.temperature != 1.0:
                lprobs = lprobs.div_(self.temperature).log_softmax(dim=-1)
            lprobs = self.next_token_lprobs(lprobs, tokens[:, :step + 1], step, max_len, forced,
                                            inplace=True)
            if done_rows.numel():
                lprobs.view(bsz, K, V).index_fill_(0, done_rows, float("-inf"))
            cand_scores, cand_tokens, cand_beams, cand_lprobs = self._select(step, lprobs.view(bsz, K, V), scores)
            if self._best_k_alive(cand_scores, cand_tokens, bsz - sum(done_list)):
                # a finished sentence's candidates are all -inf: keeping its first K keeps -inf
                keep_scores = cand_scores[:, :K]
                keep_rows = (cand_beams[:, :K] + first_rows).reshape(-1)  # (N,)
                keep_tokens = cand_tokens[:, :K].reshape(-1)
                keep_lprobs = cand_lprobs[:, :K].reshape(-1)
            else:
                rows = cand_beams + first_rows  # (bsz, C)
                kept = self._finalize_and_keep(step, tokens, pos_scores, finalized, done_list,
                                               cand_scores, cand_tokens, rows, cand_lprobs)
                if step >= max_len or all(done_list):
                    break
                keep_scores, keep_rows, keep_tokens, keep_lprobs = kept
                done_rows = torch.tensor([b for b, d in enumerate(done_list) if d], dtype=torch.long,
                                         device=device)

            # every row continues itself with one hypothesis per sentence (greedy, sampling), and
            # often with more: then neither the histories nor the caches move
            same_rows = K == 1 or torch.equal(keep_rows, identity)
            if not same_rows:
                tokens = tokens.index_select(0, keep_rows)
                pos_scores = pos_scores.index_select(0, keep_rows)
            tokens[:, step + 1] = keep_tokens
            pos_scores[:, step] = keep_lprobs
            scores = keep_scores
            if self.use_cache:
                if not same_rows:
                    self.model.reorder(keep_rows)
                all_lprobs = self.model.forward_decoder(tokens[:, step + 1:step + 2], True)
            else:
                all_lprobs = self.model.forward_decoder(tokens[:, :step + 2], False)
            step += 1
            step_lprobs = all_lprobs[:, -1]

        for b in range(bsz):
            finalized[b].sort(key=lambda h: float(h["score"]), reverse=True)
        return finalized

    def _best_k_alive(self, cand_scores: Tensor, cand_tokens: Tensor, unfinished: int) -> bool:
        """Whether the best K candidates of each of the ``unfinished`` sentences still decoding
        are all alive (finite, not EOS); a finished sentence's candidates are all -inf."""
        K = self.beam_size
        alive = torch.isfinite(cand_scores[:, :K]).logical_and_(cand_tokens[:, :K].ne(self.eos))
        return int(alive.sum()) == unfinished * K

    def _finalize_and_keep(self, step: int, tokens: Tensor, pos_scores: Tensor,
                           finalized: List[List[Hypothesis]], done: List[bool], cand_scores: Tensor,
                           cand_tokens: Tensor, rows: Tensor, cand_lprobs: Tensor) -> Tuple[Tensor, ...]:
        """Finalize the EOS candidates ranked among a sentence's first K (marking ``done`` the
        sentences that have K hypotheses), and choose the K candidates each keeps: its live
        ones first, by rank, then dead ones at -inf.

        Returns:
            ``(scores (bsz, K), rows (N,), tokens (N,), lprobs (N,))`` of the kept candidates.
        """
        bsz, C = cand_scores.shape
        K = self.beam_size
        finite = torch.isfinite(cand_scores)
        is_eos = cand_tokens.eq(self.eos) & finite
        rank = torch.arange(C, device=cand_scores.device).expand(bsz, C)
        final = (is_eos[:, :K]).nonzero().tolist()
        if final:
            rows_list, scores_list, lprobs_list = rows.tolist(), cand_scores.tolist(), cand_lprobs.tolist()
        for b, c in final:
            if done[b] or len(finalized[b]) >= K:
                continue
            row = rows_list[b][c]
            positional = pos_scores[row, :step + 1].clone()
            positional[step] = lprobs_list[b][c]
            score = scores_list[b][c]
            if self.normalize_scores:
                score /= (step + 1) ** self.len_penalty
            hyp_tokens = torch.cat([tokens[row, 1:step + 1], tokens.new_tensor([self.eos])])
            finalized[b].append({"tokens": hyp_tokens, "score": torch.tensor(score),
                                 "positional_scores": positional, "alignment": None,
                                 "attention": None})
        for b in range(bsz):
            if not done[b] and len(finalized[b]) >= K:
                done[b] = True

        dead = is_eos | ~finite
        order = (rank + C * dead.long()).argsort(dim=1)[:, :K]  # (bsz, K): live first, by rank
        keep_scores = cand_scores.gather(1, order).masked_fill_(dead.gather(1, order), float("-inf"))
        return (keep_scores, rows.gather(1, order).view(-1), cand_tokens.gather(1, order).view(-1),
                cand_lprobs.gather(1, order).view(-1))


def device_memory_bytes(device: torch.device) -> Optional[int]:
    """The memory of ``device``: a GPU's total memory, the machine's physical memory for the
    CPU; None where it cannot be read."""
    import os

    try:
        if device.type == "cuda":
            return int(torch.cuda.get_device_properties(device).total_memory)
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError, RuntimeError):
        return None


def generation_memory_bytes(bsz: int, beam: int, vocab_size: int, max_len: int) -> int:
    """A lower bound of the memory a generation call's own tensors take: for each of the
    ``bsz * beam`` rows, the token and score histories of ``max_len`` steps, and the
    log-probabilities of one step over the vocabulary (three float32 copies: the model's output,
    the constrained one and the search's candidates). The models' caches come on top."""
    rows = bsz * beam
    return rows * ((max_len + 2) * 8 + (max_len + 1) * 4 + vocab_size * 4 * 3)


def check_generation_memory(bsz: int, beam: int, vocab_size: int, max_len: int,
                            device: torch.device) -> None:
    """Refuse a generation call whose tensors alone would take more than the device's memory,
    before allocating any of them (``beam=10**9`` would otherwise ask the allocator for hundreds
    of GB, or get the process killed).

    Raises:
        GenerationSettingError: naming the rows (batch x beam), the estimate and the memory.
    """
    need = generation_memory_bytes(bsz, beam, vocab_size, max_len)
    have = device_memory_bytes(device)
    if have is not None and need > have:
        raise GenerationSettingError(
            f"generation.beam={beam} with {bsz} prompts at once needs {bsz * beam:,} rows of {max_len} "
            f"tokens and {vocab_size:,} scores each, at least {need / 2**30:.1f} GiB, more than the "
            f"{have / 2**30:.1f} GiB of {device.type}; give a smaller beam (--beam; beam= in Python) "
            "or fewer prompts at once (--batch-size; batch_size=)")


# the defaults of every generation setting: GenerationConfig's, declared there only
_DEFAULTS: Dict[str, Any] = {f.name: field_default(f) for f in dataclasses.fields(GenerationConfig)}
# fairseq's default --max-len-b; left at it, it is fitted to the model's positions, while a
# value given beyond them is an error
DEFAULT_MAX_LEN_B = _DEFAULTS["max_len_b"]

# settings of fairseq's generation that need a source sentence, references or an extra model,
# refused with the reason (language models have none of them)
_REFUSED = {
    "diverse_beam_groups": "diverse beam search is a translation feature",
    "diverse_beam_strength": "it weighs diverse beam search, a translation feature",
    "diversity_rate": "diverse siblings search is a translation feature",
    "lm_path": "an added language model is for translation models",
    "match_source_len": "a language model has no source sentence to match",
    "constraints": "lexically constrained decoding is a translation feature",
    "replace_unk": "it copies source words through an alignment, which a language model has not",
    "sacrebleu": "it scores translations against references",
    "eos_token": "generation ends at the dictionary's </s> here",
}
# accepted so that fairseq command lines run, with one warning: they change nothing here
_NO_EFFECT = {
    "no_early_stop": "fairseq deprecated it; beam search stops when every hypothesis is final",
    "no_beamable_mm": "this package's attention has no beamable matrix multiply",
}


class GenerationSettingError(ConfigError):
    """A generation setting that is out of range or does not apply to language models."""


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    """``cfg``'s value of ``key`` (a config node, a namespace or a dict), else its default."""
    default = _DEFAULTS.get(key) if default is None else default
    if isinstance(cfg, dict):
        value = cfg.get(key, default)  # optional: generation settings come as a partial dict or Namespace
    else:
        value = getattr(cfg, key, default)  # optional: as above
    return default if value is None else value


def _given(cfg: Any, key: str) -> bool:
    """Whether ``cfg`` sets ``key`` to something other than its default."""
    # optional: as in _get
    value = cfg.get(key) if isinstance(cfg, dict) else getattr(cfg, key, None)
    return value is not None and value != _DEFAULTS.get(key)


def retain_dropout(models: Sequence[torch.nn.Module]) -> None:
    """Keep dropout on in evaluation mode (``generation.retain_dropout``): the dropout modules
    and the attention (whose dropout follows its own mode) go back to training mode."""
    from fairseq.modules.multihead_attention import MultiheadAttention

    for model in models:
        for module in model.modules():
            if isinstance(module, (torch.nn.Dropout, MultiheadAttention)):
                module.train()


def build_generator(models: Sequence[torch.nn.Module], gen_cfg: Any, tgt_dict: Any,
                    generator: Optional[torch.Generator] = None,
                    score_reference: Optional[bool] = None) -> Any:
    """The generator fairseq's generation settings describe (``cfg.generation``, a legacy
    namespace or a dict): a :class:`SequenceGenerator`, or with ``score_reference`` a
    :class:`~fairseq.sequence_scorer.SequenceScorer`.

    Raises:
        GenerationSettingError: for settings out of range, beyond the models' positions, or
            of translation-only features.
    """
    if score_reference if score_reference is not None else bool(_get(gen_cfg, "score_reference")):
        from fairseq.sequence_scorer import SequenceScorer

        return SequenceScorer(tgt_dict)
    for key, why in _REFUSED.items():
        if _given(gen_cfg, key):
            raise GenerationSettingError(f"generation.{key}={_get(gen_cfg, key)!r} is not supported "
                                         f"for language models ({why}); leave it unset")
    for key, why in _NO_EFFECT.items():
        if _given(gen_cfg, key):
            logger.warning("generation.%s has no effect: %s", key, why)
    beam = int(_get(gen_cfg, "beam"))
    if beam < 1:
        raise GenerationSettingError(f"generation.beam={beam}: give at least 1 (--beam)")
    sampling = bool(_get(gen_cfg, "sampling"))
    if not sampling and beam > len(tgt_dict):
        # each step ranks at most one candidate per vocabulary entry from the first hypothesis:
        # a wider beam is never filled, only allocated
        raise GenerationSettingError(
            f"generation.beam={beam} (--beam) is more than the {len(tgt_dict)} symbols of the "
            f"vocabulary, the most hypotheses a beam search can tell apart; give --beam {len(tgt_dict)} "
            "or less (a few, e.g. 5, is usual)")
    topk, topp = int(_get(gen_cfg, "sampling_topk")), float(_get(gen_cfg, "sampling_topp"))
    if (topk > 0 or topp > 0) and not sampling:
        raise GenerationSettingError(
            f"generation.sampling_topk={topk} / sampling_topp={topp} only apply when sampling: "
            "add --sampling (generation.sampling=true)")
    temperature = float(_get(gen_cfg, "temperature"))
    if temperature <= 0:
        raise GenerationSettingError(f"generation.temperature={temperature}: give a value > 0")
    if bool(_get(gen_cfg, "retain_dropout")):
        retain_dropout(models)
    ensemble = EnsembleModel(models)
    limit = ensemble.max_decoder_positions()
    max_len_b = int(_get(gen_cfg, "max_len_b"))
    if max_len_b == DEFAULT_MAX_LEN_B and max_len_b > limit - 1:
        max_len_b = limit - 1  # the default, not a request: fit it to the model
    if max_len_b < 0 or max_len_b > limit - 1:
        raise GenerationSettingError(
            f"generation.max_len_b={max_len_b} is beyond the model's {limit - 1} generated "
            f"positions (model.max_target_positions={limit}); give --max-len-b {limit - 1} or less")
    min_len = int(_get(gen_cfg, "min_len"))
    if min_len < 0:
        raise GenerationSettingError(f"generation.min_len={min_len}: give 0 or more")
    if float(_get(gen_cfg, "max_len_a")) == 0 and min_len > max_len_b:
        # EOS is blocked for min_len tokens: no hypothesis could ever end
        given = max_len_b == int(_get(gen_cfg, "max_len_b"))
        bound = (f"generation.max_len_b={max_len_b} (--max-len-b)" if given else
                 f"the {max_len_b} tokens the model's positions leave (model.max_target_positions={limit})")
        more = f", or --max-len-b {min_len} or more" if given and min_len <= limit - 1 else ""
        raise GenerationSettingError(
            f"generation.min_len={min_len} (--min-len) is more than the longest output, {bound}: no "
            f"output could end; give --min-len {max_len_b} or less{more}")
    ngram = int(_get(gen_cfg, "no_repeat_ngram_size"))
    if ngram < 0:
        raise GenerationSettingError(f"generation.no_repeat_ngram_size={ngram}: give 0 (off) or more")
    try:
        search = build_search(sampling, topk, topp, tgt_dict, generator)
    except ValueError as e:
        raise GenerationSettingError(f"generation: {e}") from None
    return SequenceGenerator(
        ensemble, tgt_dict, beam_size=beam, max_len_a=float(_get(gen_cfg, "max_len_a")),
        max_len_b=max_len_b, min_len=min_len,
        normalize_scores=not bool(_get(gen_cfg, "unnormalized")),
        len_penalty=float(_get(gen_cfg, "lenpen")), unk_penalty=float(_get(gen_cfg, "unkpen")),
        temperature=temperature, no_repeat_ngram_size=ngram, search_strategy=search)


def build_search(sampling: bool = False, sampling_topk: int = -1, sampling_topp: float = -1.0,
                 tgt_dict: Any = None, generator: Optional[torch.Generator] = None) -> Search:
    """The search strategy of fairseq's generation flags."""
    if sampling or sampling_topk > 0 or sampling_topp > 0:
        return Sampling(tgt_dict, sampling_topk, sampling_topp, generator=generator)
    return BeamSearch(tgt_dict)


__all__ = ["EnsembleModel", "GenerationSettingError", "SequenceGenerator", "build_generator", "build_search"]
