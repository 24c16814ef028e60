"""SequenceGenerator: cached decoding equals uncached, greedy/beam/sampling agree with brute force."""
import itertools
import math

import pytest
import torch

from fairseq.data import Dictionary
from fairseq.models.transformer_lm import TransformerLanguageModel, TransformerLanguageModelConfig
from fairseq.search import Sampling
from fairseq.sequence_generator import SequenceGenerator
from op_watch import LargestOutput


def _dictionary(n_words: int) -> Dictionary:
    d = Dictionary()
    for i in range(n_words):
        d.add_symbol(f"w{i}")
    return d


class _Task:
    def __init__(self, d):
        self.source_dictionary = self.target_dictionary = d


def _model(d: Dictionary, seed: int = 0) -> TransformerLanguageModel:
    torch.manual_seed(seed)
    cfg = TransformerLanguageModelConfig(
        decoder_layers=2, decoder_embed_dim=16, decoder_input_dim=16, decoder_output_dim=16,
        decoder_ffn_embed_dim=32, decoder_attention_heads=2, dropout=0.0, max_target_positions=64)
    model = TransformerLanguageModel.build_model(cfg, _Task(d)).eval()
    with torch.no_grad():  # sharpen the distribution so that sequences differ clearly in score
        model.decoder.output_projection.weight.mul_(4.0)
    return model


def _sample(prompts, d):
    width = max(len(p) for p in prompts)
    src = torch.full((len(prompts), width), d.pad())
    for i, p in enumerate(prompts):
        src[i, :len(p)] = torch.tensor(p)
    return {"net_input": {"src_tokens": src, "src_lengths": torch.tensor([len(p) for p in prompts])}}, src


def _logprob(model, d, sequence):
    """Sum of log p(token) of ``sequence`` after BOS (= EOS), by one full forward."""
    tokens = torch.tensor([[d.eos()] + list(sequence)])
    with torch.no_grad():
        lp = model.get_normalized_probs(model(tokens[:, :-1]), log_probs=True)[0]
    return lp.gather(1, tokens[0, 1:].unsqueeze(1)).sum().item()


@pytest.mark.parametrize("beam", [1, 3])
def test_cached_generation_equals_uncached_token_for_token(beam):
    d = _dictionary(12)
    model = _model(d)
    sample, src = _sample([[4, 5, 6], [7], [8, 9]], d)
    outputs = []
    for use_cache in (True, False):
        gen = SequenceGenerator([model], d, beam_size=beam, max_len_b=12, use_cache=use_cache)
        outputs.append(gen.generate([model], sample, prefix_tokens=src))
    for cached, uncached in zip(*outputs):
        assert len(cached) == len(uncached) == beam
        for a, b in zip(cached, uncached):
            assert a["tokens"].tolist() == b["tokens"].tolist()
            assert torch.allclose(a["positional_scores"], b["positional_scores"], atol=1e-5)


def test_prompt_is_kept_and_scored_and_hypothesis_ends_in_eos():
    d = _dictionary(12)
    model = _model(d)
    sample, src = _sample([[4, 5, 6], [7]], d)
    hypos = SequenceGenerator([model], d, beam_size=2, max_len_b=8).generate([model], sample, prefix_tokens=src)
    for prompt, hyps in zip([[4, 5, 6], [7]], hypos):
        best = hyps[0]
        assert best["tokens"][:len(prompt)].tolist() == prompt
        assert best["tokens"][-1].item() == d.eos()
        assert len(best["positional_scores"]) == len(best["tokens"])
        # the score is the length-normalized log-probability of the whole sequence
        assert best["score"].item() == pytest.approx(
            _logprob(model, d, best["tokens"].tolist()) / len(best["tokens"]), abs=1e-4)
        assert hyps[0]["score"] >= hyps[1]["score"]


def test_beam_search_finds_the_brute_force_optimum_when_the_beam_covers_every_sequence():
    d = _dictionary(3)  # 4 specials + 3 words; pad never generated
    model = _model(d, seed=1)
    max_len = 3
    words = [i for i in range(len(d)) if i not in (d.pad(), d.eos())]
    # every sequence of up to max_len tokens ending in EOS (a hypothesis may end early), but
    # not EOS alone: min_len=1 (the default) forbids EOS as the first token, as in fairseq
    best_score, best_seq = -math.inf, None
    for length in range(2, max_len + 1):
        for body in itertools.product(words, repeat=length - 1):
            seq = list(body) + [d.eos()]
            score = _logprob(model, d, seq) / len(seq)
            if score > best_score:
                best_score, best_seq = score, seq
    beam = len(words) ** max_len  # wide enough to keep every live prefix
    gen = SequenceGenerator([model], d, beam_size=beam, max_len_b=max_len - 1)
    sample, _ = _sample([[4]], d)
    hypos = gen.generate([model], sample, prefix_tokens=None)[0]
    assert hypos[0]["tokens"].tolist() == best_seq
    assert hypos[0]["score"].item() == pytest.approx(best_score, abs=1e-4)


def test_greedy_equals_top1_sampling_and_sampling_is_reproducible():
    d = _dictionary(12)
    model = _model(d)
    sample, src = _sample([[4, 5], [6]], d)
    greedy = SequenceGenerator([model], d, beam_size=1, max_len_b=10).generate([model], sample, prefix_tokens=src)
    top1 = SequenceGenerator([model], d, beam_size=1, max_len_b=10,
                             search_strategy=Sampling(d, sampling_topk=1)).generate([model], sample, prefix_tokens=src)
    assert [h[0]["tokens"].tolist() for h in greedy] == [h[0]["tokens"].tolist() for h in top1]

    def draw(seed):
        g = torch.Generator().manual_seed(seed)
        gen = SequenceGenerator([model], d, beam_size=4, max_len_b=10, temperature=1.5,
                                search_strategy=Sampling(d, sampling_topp=0.9, generator=g))
        return [[h["tokens"].tolist() for h in hyps] for hyps in gen.generate([model], sample, prefix_tokens=src)]

    assert draw(3) == draw(3)
    assert all(len(hyps) == 4 for hyps in draw(3))


def test_min_len_no_repeat_ngram_and_unk_penalty():
    d = _dictionary(12)
    model = _model(d)
    sample, _ = _sample([[4]], d)
    hyp = SequenceGenerator([model], d, max_len_b=10, min_len=6).generate([model], sample)[0][0]
    assert len(hyp["tokens"]) >= 7  # 6 tokens, then EOS
    hyp = SequenceGenerator([model], d, max_len_b=20, min_len=20, no_repeat_ngram_size=2).generate([model], sample)[0][0]
    body = hyp["tokens"][:-1].tolist()
    bigrams = list(zip(body, body[1:]))
    assert len(bigrams) == len(set(bigrams))
    hyp = SequenceGenerator([model], d, max_len_b=10, unk_penalty=1e9).generate([model], sample)[0][0]
    assert d.unk() not in hyp["tokens"].tolist()


def test_bad_settings_are_clear_errors():
    d = _dictionary(5)
    model = _model(d)
    with pytest.raises(ValueError, match="min_len"):
        SequenceGenerator([model], d, max_len_b=3, min_len=10).generate([model], _sample([[4]], d)[0])
    with pytest.raises(ValueError, match="sampling_topp"):
        Sampling(d, sampling_topp=1.5)
    with pytest.raises(ValueError, match="temperature"):
        SequenceGenerator([model], d, temperature=0)


# -- sampling from the candidates only, beam search's cache reordered in place ----------------------

def _nucleus(lp_row, p, k=None):
    """The tokens of one row that top-k then top-p sampling may draw, by brute force."""
    order = lp_row.argsort(descending=True).tolist()
    if k is not None:
        order = order[:k]
    kept, mass = [], 0.0
    for tok in order:
        if mass >= p or lp_row[tok] == float("-inf"):
            break
        kept.append(tok)
        mass += math.exp(float(lp_row[tok]))
    return set(kept)


@pytest.mark.parametrize("topk, topp", [(5, -1.0), (-1, 0.5), (-1, 0.999), (40, 0.9), (1, -1.0)])
def test_sampling_draws_only_from_the_top_k_or_the_nucleus(topk, topp):
    g = torch.Generator().manual_seed(0)
    bsz, K, V = 3, 2, 2000
    lprobs = (torch.randn(bsz, K, V, generator=g) * 2).log_softmax(-1)
    lprobs[0, 1, 7:] = float("-inf")  # a row with fewer finite tokens than k
    scores = torch.randn(bsz, K, generator=g)
    allowed = [_nucleus(lprobs.view(-1, V)[r], topp if topp > 0 else 2.0, topk if topk > 0 else None)
               for r in range(bsz * K)]
    search = Sampling(sampling_topk=topk, sampling_topp=topp, generator=torch.Generator().manual_seed(1))
    seen = [set() for _ in range(bsz * K)]
    for _ in range(50):
        s, tokens, beams = search.select(0, lprobs, scores)
        assert tokens.shape == beams.shape == s.shape == (bsz, K)
        assert beams.tolist() == [[0, 1]] * bsz
        torch.testing.assert_close(s, scores + lprobs.gather(2, tokens.unsqueeze(2)).squeeze(2))
        for r, tok in enumerate(tokens.view(-1).tolist()):
            seen[r].add(tok)
    for r in range(bsz * K):
        assert seen[r] <= allowed[r], r
    if topk == 1:
        assert [min(a) for a in seen] == lprobs.view(-1, V).argmax(-1).tolist()


def test_sampling_follows_the_renormalized_top_k_distribution():
    lprobs = torch.tensor([0.4, 0.3, 0.2, 0.05, 0.05]).log().view(1, 1, 5)
    search = Sampling(sampling_topk=3, generator=torch.Generator().manual_seed(0))
    counts = torch.zeros(5)
    for _ in range(3000):
        counts[search.select(0, lprobs, torch.zeros(1, 1))[1].item()] += 1
    assert counts[3:].sum() == 0
    torch.testing.assert_close(counts[:3] / 3000, torch.tensor([4, 3, 2]) / 9, atol=0.03, rtol=0)


def test_a_sentence_with_nothing_allowed_gets_a_minus_infinity_score():
    lprobs = torch.full((2, 1, 30), float("-inf"))
    lprobs[1, 0] = torch.randn(30).log_softmax(-1)
    for search in (Sampling(sampling_topk=4), Sampling(sampling_topp=0.8), Sampling()):
        s, tokens, _ = search.select(0, lprobs, torch.zeros(2, 1))
        assert s[0, 0] == float("-inf") and torch.isfinite(s[1, 0])
        assert 0 <= int(tokens[0, 0]) < 30


def test_top_k_sampling_makes_no_copy_of_the_vocabulary():
    lprobs = torch.randn(8, 1, 5000).log_softmax(-1)
    search = Sampling(sampling_topk=10, generator=torch.Generator().manual_seed(0))
    with LargestOutput(ignore={torch.ops.aten.view.default}) as watch:
        search.select(0, lprobs, torch.zeros(8, 1))
    assert watch.largest <= 8 * 10


@pytest.mark.parametrize("search", ["topk", "topp"])
def test_sampling_a_batch_is_reproducible_with_a_seed(search):
    d = _dictionary(30)
    model = _model(d)
    sample, src = _sample([[4, 5], [6], [7, 8, 9], [10]], d)

    def draw(seed):
        g = torch.Generator().manual_seed(seed)
        strategy = Sampling(d, sampling_topk=5, generator=g) if search == "topk" else \
            Sampling(d, sampling_topp=0.7, generator=g)
        gen = SequenceGenerator([model], d, beam_size=2, max_len_b=12, search_strategy=strategy)
        return [[h["tokens"].tolist() for h in hyps] for hyps in gen.generate([model], sample, prefix_tokens=src)]

    assert draw(5) == draw(5)
    assert draw(5) != draw(6)


def test_beam_search_with_the_in_place_cache_reorder_equals_a_copying_reorder(monkeypatch):
    """The decoder reorders its attention caches in place (only the rows that move); beam search
    gives the same hypotheses and scores as with a reorder that copies every tensor."""
    from fairseq.modules.transformer_decoder import TransformerDecoder

    d = _dictionary(12)
    model = _model(d)
    sample, src = _sample([[4, 5, 6], [7], [8, 9]], d)

    def copying(self, state, new_order):
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                state[key] = value.index_select(0, new_order)
            elif isinstance(value, dict):
                copying(self, value, new_order)

    runs = []
    for patch in (False, True):
        if patch:
            monkeypatch.setattr(TransformerDecoder, "reorder_incremental_state", copying)
        gen = SequenceGenerator([model], d, beam_size=3, max_len_b=12, min_len=8)
        runs.append(gen.generate([model], sample, prefix_tokens=src))
    for a_hyps, b_hyps in zip(*runs):
        for a, b in zip(a_hyps, b_hyps):
            assert a["tokens"].tolist() == b["tokens"].tolist()
            assert torch.equal(a["positional_scores"], b["positional_scores"])


def test_the_decoder_reorders_its_attention_caches_in_place():
    d = _dictionary(12)
    model = _model(d).eval()
    state = {}
    tokens = torch.tensor([[2, 4, 5], [2, 6, 7], [2, 8, 9]])
    with torch.no_grad():
        model(tokens, incremental_state=state)
    caches = [c for c in state.values() if isinstance(c, dict) and "buffers" in c]
    assert caches
    before = [(c["key"].data_ptr(), c["key"].clone()) for c in caches]
    order = torch.tensor([2, 2, 0])
    model.reorder_incremental_state(state, order)
    for c, (ptr, key) in zip(caches, before):
        assert c["key"].data_ptr() == ptr and torch.equal(c["key"], key[order])
    shrink = torch.tensor([1])  # fewer rows: the caches are replaced by the selected rows
    model.reorder_incremental_state(state, shrink)
    assert all(c["key"].size(0) == 1 for c in caches)


def test_greedy_and_sampling_never_reorder_the_cache(monkeypatch):
    from fairseq.sequence_generator import EnsembleModel

    calls = []
    monkeypatch.setattr(EnsembleModel, "reorder", lambda self, order: calls.append(order))
    d = _dictionary(12)
    model = _model(d)
    sample, src = _sample([[4, 5], [6]], d)
    SequenceGenerator([model], d, beam_size=1, max_len_b=10).generate([model], sample, prefix_tokens=src)
    SequenceGenerator([model], d, beam_size=1, max_len_b=10, search_strategy=Sampling(d, sampling_topk=3)
                      ).generate([model], sample, prefix_tokens=src)
    assert calls == []


def test_the_attention_cache_grows_in_place_and_reorders_in_place():
    from fairseq.modules.multihead_attention import MultiheadAttention, reorder_cache_

    attn = MultiheadAttention(16, 4).eval()
    x = torch.randn(3, 6, 16)
    cache = {}
    with torch.no_grad():
        attn(x[:, :2], cache=cache)
        ptr = cache["key"].data_ptr()
        for t in range(2, 6):
            attn(x[:, t:t + 1], cache=cache)
        assert cache["key"].shape == (3, 4, 6, 4) and cache["key"].data_ptr() == ptr  # no new buffer
        keys, values = cache["key"].clone(), cache["value"].clone()
        order = torch.tensor([2, 0, 0])
        reorder_cache_(cache, order)
        assert cache["key"].data_ptr() == ptr
        assert torch.equal(cache["key"], keys[order]) and torch.equal(cache["value"], values[order])
        # a generic reorder replaces the tensors: the next step adopts them
        cache["key"], cache["value"] = keys[order], values[order]
        y = attn(x[order][:, 5:6], cache=cache)
        assert cache["key"].shape == (3, 4, 7, 4)
        torch.testing.assert_close(cache["key"][:, :, :6], keys[order])
        fresh = {}
        attn(x[order], cache=fresh)  # the same 6 positions, in the new order from the start
        torch.testing.assert_close(y, attn(x[order][:, 5:6], cache=fresh))
