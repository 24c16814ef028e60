"""SequenceGenerator: cached decoding equals uncached, greedy/beam/sampling agree with brute force."""
import itertools
import math

import pytest
import torch

from fairseq.data import Dictionary
from fairseq.models.transformer_lm import TransformerLanguageModel, TransformerLanguageModelConfig
from fairseq.search import Sampling
from fairseq.sequence_generator import SequenceGenerator


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
    # every sequence of up to max_len tokens followed by EOS (a hypothesis may end early)
    best_score, best_seq = -math.inf, None
    for length in range(1, max_len + 1):
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
