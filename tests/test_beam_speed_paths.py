"""The fast paths of beam search give what a slow, plain beam search gives.

* ``row_topk`` (top-k through group maxima) and ``BeamSearch``'s two-round top-k against one
  ``topk`` over every extension;
* the generator's step that keeps the best K as they are, against the same generator forced
  through the general finalize-and-sort step on every step (bit for bit);
* the generator against a reference beam search written here for one sentence at a time, with
  full (uncached) forwards and Python lists.
"""
from types import SimpleNamespace
from typing import List

import pytest
import torch

from fairseq.data import Dictionary
from fairseq.models.transformer_lm import TransformerLanguageModel, TransformerLanguageModelConfig
from fairseq.search import TOPK_GROUP, BeamSearch, Sampling, Search, row_topk
from fairseq.sequence_generator import SequenceGenerator

NEG_INF = float("-inf")


def _dictionary(n_words: int) -> Dictionary:
    d = Dictionary()
    for i in range(n_words):
        d.add_symbol(f"w{i}")
    return d


def _model(d: Dictionary, seed: int, eos_boost: float = 0.0, sharpen: float = 4.0) -> TransformerLanguageModel:
    torch.manual_seed(seed)
    cfg = TransformerLanguageModelConfig(
        decoder_layers=1, decoder_embed_dim=16, decoder_input_dim=16, decoder_output_dim=16,
        decoder_ffn_embed_dim=32, decoder_attention_heads=2, dropout=0.0, max_target_positions=64,
        share_decoder_input_output_embed=False)
    task = SimpleNamespace(source_dictionary=d, target_dictionary=d)
    model = TransformerLanguageModel.build_model(cfg, task).eval()
    with torch.no_grad():  # distinct scores; with eos_boost, hypotheses that end early
        weight = model.decoder.output_projection.weight
        weight.mul_(sharpen)
        weight[d.eos()] += eos_boost * weight[5]
    return model


def _sample(prompts: List[List[int]], d: Dictionary):
    width = max(len(p) for p in prompts)
    src = torch.full((len(prompts), width), d.pad())
    for i, p in enumerate(prompts):
        src[i, :len(p)] = torch.tensor(p)
    return {"net_input": {"src_tokens": src, "src_lengths": torch.tensor([len(p) for p in prompts])}}, src


# -- top-k ------------------------------------------------------------------------------------
@pytest.mark.parametrize("vocab", [4 * 10 * TOPK_GROUP, 14000, 14000 + 37])
def test_row_topk_gives_the_values_and_tokens_of_topk(vocab):
    g = torch.Generator().manual_seed(vocab)
    x = torch.randn(6, vocab, generator=g)
    x[1, :-3] = NEG_INF  # three finite entries, the rest tied at -inf
    x[2, -5:] = 50.0 + torch.arange(5.0)  # the best in the tail that fills no group
    x[3] = NEG_INF
    values, ids = row_topk(x, 10)
    expected_values, expected_ids = x.topk(10, dim=1)
    assert torch.equal(values, expected_values)
    finite = torch.isfinite(expected_values)
    assert torch.equal(ids[finite], expected_ids[finite])
    assert torch.equal(x.gather(1, ids), values)  # every index names its value, none repeats
    assert all(len(set(row)) == 10 for row in ids.tolist())


def test_row_topk_with_few_groups_is_topk_itself():
    x = torch.randn(3, 4 * 10 * TOPK_GROUP - 1)
    assert all(torch.equal(a, b) for a, b in zip(row_topk(x, 10), x.topk(10, dim=1)))


@pytest.mark.parametrize("beam,vocab", [(1, 3000), (4, 3000), (5, 14000), (3, 7)])
def test_two_round_beam_candidates_equal_one_topk_over_every_extension(beam, vocab):
    g = torch.Generator().manual_seed(beam * vocab)
    bsz = 3
    lprobs = torch.randn(bsz, beam, vocab, generator=g).log_softmax(-1)
    scores = torch.randn(bsz, beam, generator=g) * 5
    scores[0, 1:] = NEG_INF  # the first step: one live hypothesis
    cand_scores, tokens, beams, token_lprobs = BeamSearch().select_with_lprobs(0, lprobs, scores)
    total = (scores.unsqueeze(2) + lprobs).view(bsz, beam * vocab)
    expected_scores, flat = total.topk(min(2 * beam, beam * vocab), dim=1)
    assert torch.equal(cand_scores, expected_scores)
    finite = torch.isfinite(expected_scores)
    assert torch.equal(tokens[finite], (flat % vocab)[finite])
    assert torch.equal(beams[finite], (flat // vocab)[finite])
    assert torch.equal(token_lprobs, lprobs[torch.arange(bsz).unsqueeze(1), beams, tokens])
    assert all(torch.equal(a, b) for a, b in zip(BeamSearch().select(0, lprobs, scores),
                                                  (cand_scores, tokens, beams)))


def test_sampling_and_a_plain_search_give_the_lprobs_of_their_tokens():
    lprobs = torch.randn(2, 3, 50).log_softmax(-1)
    scores = torch.zeros(2, 3)
    a = Sampling(sampling_topk=5, generator=torch.Generator().manual_seed(1)).select_with_lprobs(0, lprobs, scores)
    b = Sampling(sampling_topk=5, generator=torch.Generator().manual_seed(1)).select(0, lprobs, scores)
    assert all(torch.equal(x, y) for x, y in zip(a[:3], b))
    assert torch.equal(a[3], lprobs.gather(2, a[1].unsqueeze(2)).squeeze(2))

    class Greedy(Search):  # only select(): the generic look-up supplies the lprobs
        def select(self, step, lprobs, scores):
            best, token = lprobs.max(dim=2)
            return scores + best, token, torch.arange(lprobs.size(1)).expand_as(token)

    _, tokens, beams, found = Greedy().select_with_lprobs(0, lprobs, scores)
    assert torch.equal(found, lprobs.max(dim=2)[0])


# -- the generator ----------------------------------------------------------------------------
# (generator settings, how much the model favours EOS)
SETTINGS = [
    (dict(beam_size=5, max_len_b=10), 0.0),
    (dict(beam_size=5, max_len_b=10, min_len=4, len_penalty=0.5), 1.5),
    (dict(beam_size=4, max_len_b=10, no_repeat_ngram_size=2, unk_penalty=1.5), 1.5),
    (dict(beam_size=1, max_len_b=8), 1.5),
    (dict(beam_size=3, max_len_b=6, use_cache=False, normalize_scores=False, len_penalty=2.0), 1.5),
]


def _hypotheses(gen, models, sample, prefix):
    out = gen.generate(models, sample, prefix_tokens=prefix)
    return [[(h["tokens"].tolist(), h["score"].item(), h["positional_scores"].tolist()) for h in hs] for hs in out]


@pytest.mark.parametrize("settings,eos_boost", SETTINGS)
def test_keeping_the_best_k_as_they_are_equals_the_general_step_bit_for_bit(settings, eos_boost, monkeypatch):
    d = _dictionary(3000)  # large enough for the grouped top-k of 2 x beam
    models = [_model(d, seed=3, eos_boost=eos_boost, sharpen=8.0)]
    sample, src = _sample([[4, 5, 6, 7], [8], [9, 10]], d)
    fast = _hypotheses(SequenceGenerator(models, d, **settings), models, sample, src)
    calls = []
    monkeypatch.setattr(SequenceGenerator, "_best_k_alive", lambda self, *a: calls.append(1) and False)
    general = _hypotheses(SequenceGenerator(models, d, **settings), models, sample, src)
    assert calls and fast == general


def _reference_beam(model, d: Dictionary, prompt: List[int], beam: int, max_len: int, min_len: int = 1,
                    len_penalty: float = 1.0, unk_penalty: float = 0.0, ngram: int = 0,
                    normalize: bool = True) -> List[tuple]:
    """Beam search for one sentence as the generator defines it, with lists and full forwards:
    the best 2 x beam extensions; those ending in EOS among the first ``beam`` are final; the
    best ``beam`` others live on; stop once ``beam`` are final or at ``max_len``."""
    live = [(0.0, [], [])]  # (score, tokens after BOS, per-token lprobs)
    final: List[tuple] = []
    for step in range(max_len + 1):
        candidates = []
        for score, tokens, positional in live:
            with torch.no_grad():
                net = model(torch.tensor([[d.eos()] + tokens]))
                lp = model.get_normalized_probs(net, log_probs=True)[0, -1].double()
            lp[d.pad()] = NEG_INF
            lp[d.unk()] -= unk_penalty
            if step >= max_len:
                allowed = {d.eos()}
            elif step < len(prompt):
                allowed = {prompt[step]}
            else:
                allowed = set(range(len(d)))
                if step < min_len:
                    allowed.discard(d.eos())
                if ngram and len(tokens) + 1 >= ngram:
                    seq = [d.eos()] + tokens
                    tail = seq[len(seq) - ngram + 1:]
                    allowed -= {seq[i + ngram - 1] for i in range(len(seq) - ngram + 1)
                                if seq[i:i + ngram - 1] == tail}
            for token in allowed:
                value = float(lp[token])
                if value > NEG_INF:
                    candidates.append((score + value, tokens + [token], positional + [value]))
        candidates.sort(key=lambda c: -c[0])
        candidates = candidates[:2 * beam]
        for rank, (score, tokens, positional) in enumerate(candidates):
            if rank < beam and tokens[-1] == d.eos() and len(final) < beam:
                final.append((tokens, score / len(tokens) ** len_penalty if normalize else score, positional))
        live = [c for c in candidates if c[1][-1] != d.eos()][:beam]
        if len(final) >= beam or step >= max_len:
            break
    return sorted(final, key=lambda h: -h[1])


@pytest.mark.parametrize("options", [
    dict(beam=3, max_len=8),
    dict(beam=4, max_len=10, min_len=5, len_penalty=0.5),
    dict(beam=2, max_len=10, ngram=2, unk_penalty=1.0),
    dict(beam=3, max_len=6, normalize=False),
])
def test_generator_equals_a_reference_beam_search(options):
    d = _dictionary(20)
    model = _model(d, seed=7, eos_boost=1.2)
    prompts = [[4, 5, 6], [7], [8, 9]]
    sample, src = _sample(prompts, d)
    gen = SequenceGenerator(
        [model], d, beam_size=options["beam"], max_len_b=options["max_len"], min_len=options.get("min_len", 1),
        len_penalty=options.get("len_penalty", 1.0), unk_penalty=options.get("unk_penalty", 0.0),
        no_repeat_ngram_size=options.get("ngram", 0), normalize_scores=options.get("normalize", True))
    hypos = gen.generate([model], sample, prefix_tokens=src)
    for prompt, hyps in zip(prompts, hypos):
        expected = _reference_beam(model, d, prompt, **options)
        assert [h["tokens"].tolist() for h in hyps] == [e[0] for e in expected]
        for h, (_, score, positional) in zip(hyps, expected):
            assert h["score"].item() == pytest.approx(score, abs=1e-4)
            assert h["positional_scores"].tolist() == pytest.approx(positional, abs=1e-4)


def _one_topk_select(step, lprobs, scores):
    """Beam candidates as one top-k over every extension (the plain way)."""
    bsz, beam, vocab = lprobs.shape
    total, flat = (scores.unsqueeze(2) + lprobs).view(bsz, beam * vocab).topk(min(2 * beam, beam * vocab), dim=1)
    return total, flat % vocab, flat // vocab


class PlainBeamSearch(BeamSearch):
    """Beam search the plain way, whose lprobs the generator looks up itself."""

    def select(self, step, lprobs, scores):
        return _one_topk_select(step, lprobs, scores)

    select_with_lprobs = Search.select_with_lprobs


def test_two_round_beam_search_equals_the_plain_one_in_the_generator():
    d = _dictionary(3000)
    models = [_model(d, seed=5, eos_boost=1.5, sharpen=8.0)]
    sample, src = _sample([[4, 5, 6], [7], [8, 9]], d)
    fast = _hypotheses(SequenceGenerator(models, d, beam_size=5, max_len_b=10), models, sample, src)
    plain = _hypotheses(SequenceGenerator(models, d, beam_size=5, max_len_b=10, search_strategy=PlainBeamSearch()),
                        models, sample, src)
    assert fast == plain


def test_a_search_with_only_select_still_drives_the_generator():
    d = _dictionary(20)
    model = _model(d, seed=2)

    class OnlySelect:  # not derived from Search, as a user's strategy may be
        def select(self, step, lprobs, scores):
            return _one_topk_select(step, lprobs, scores)

    sample, src = _sample([[4, 5], [6]], d)
    plain = _hypotheses(SequenceGenerator([model], d, max_len_b=8), [model], sample, src)
    duck = _hypotheses(SequenceGenerator([model], d, max_len_b=8, search_strategy=OnlySelect()), [model], sample, src)
    assert duck == plain


# -- the decoder's cached step ------------------------------------------------------------------
def test_a_cached_step_without_pads_builds_no_mask_and_equals_the_masked_step(monkeypatch):
    """With no pad seen, a cached step of one token attends without a mask tensor (the fast
    kernels), and gives the same logits as the masked step it replaces; a pad anywhere brings the
    mask back for the rest of the decoding."""
    import torch.nn.functional as F

    from fairseq.modules import multihead_attention as mha

    d = _dictionary(200)
    model = _model(d, seed=3)
    masks = []
    real = F.scaled_dot_product_attention

    def recording(q, k, v, attn_mask=None, **kw):
        masks.append(attn_mask is not None)
        return real(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(mha.F, "scaled_dot_product_attention", recording)
    tokens = torch.randint(4, 200, (3, 6), generator=torch.Generator().manual_seed(0))
    tokens[:, 0] = d.eos()

    def decode(state, force_mask=False):
        out = []
        for t in range(tokens.size(1)):
            if force_mask:  # the old rule: every step builds the padding-aware mask
                state["has_pads"] = True
            out.append(model(tokens[:, t:t + 1], incremental_state=state)[0])
        return torch.cat(out, dim=1)

    masks.clear()
    fast = decode({})
    assert not any(masks)  # a one-token step after a pad-free past: no mask at all
    masks.clear()
    masked = decode({}, force_mask=True)
    assert masks and all(masks[1:])
    assert torch.equal(fast, masked)
    assert torch.allclose(fast, model(tokens)[0], atol=1e-5)  # and what a full forward gives

    padded = tokens.clone()
    padded[1, 2] = d.pad()  # a pad in one row: masks from that step on, and that row skips it
    masks.clear()
    state: dict = {}
    for t in range(padded.size(1)):
        model(padded[:, t:t + 1], incremental_state=state)
    per_step = len(masks) // padded.size(1)
    assert not any(masks[:2 * per_step]) and all(masks[2 * per_step:])


@pytest.mark.parametrize("search", ["beam", "sampling"])
def test_the_common_prompt_goes_through_the_model_once_per_sentence(search, monkeypatch):
    """A sentence's K hypotheses share their prompt: its first forward has one row per sentence
    (not K), the caches are then widened, and the hypotheses are those of a forward of all K
    rows (log-probabilities within float rounding: the products see fewer rows)."""
    from fairseq.sequence_generator import EnsembleModel

    d = _dictionary(300)
    models = [_model(d, seed=4, eos_boost=1.0)]
    prompts = [[4, 5, 6, 7], [8, 9, 10, 11, 12], [13, 14, 15, 16]]  # common part: 4 tokens
    sample, src = _sample(prompts, d)
    rows = []
    real = EnsembleModel.forward_decoder

    def recording(self, tokens, use_cache):
        rows.append(tuple(tokens.shape))
        return real(self, tokens, use_cache)

    monkeypatch.setattr(EnsembleModel, "forward_decoder", recording)

    def generate(shared):
        gen = SequenceGenerator(models, d, beam_size=4, max_len_b=12, search_strategy=(
            BeamSearch() if search == "beam" else Sampling(sampling_topk=5, generator=torch.Generator().manual_seed(3))))
        gen.shared_prompt_forward = shared
        rows.clear()
        return _hypotheses(gen, models, sample, src), list(rows)

    (shared, shared_rows), (each, each_rows) = generate(True), generate(False)
    assert shared_rows[0] == (3, 5) and each_rows[0] == (12, 5)  # 3 sentences or 3 x 4 rows: BOS + 4 tokens
    assert all(r == (12, 1) for r in shared_rows[1:] + each_rows[1:])  # then 3 x 4 hypotheses, a token each
    assert [[h[0] for h in hs] for hs in shared] == [[h[0] for h in hs] for hs in each]
    for hs, es in zip(shared, each):
        for (_, score, positional), (_, e_score, e_positional) in zip(hs, es):
            assert score == pytest.approx(e_score, abs=1e-5)
            assert positional == pytest.approx(e_positional, abs=1e-5)
