"""The language_modeling task: what each option does to the samples, read back as words."""
import argparse
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from fairseq import tasks
from fairseq.dataclass.initialize import compose_config
from fairseq.tasks.language_modeling import LanguageModelingConfig

# Two documents separated by an empty line. Word counts: e 5, d 4, c 3, the 3, b 2, others 1,
# so the dictionary (most frequent first) starts with e, d.
TRAIN = """\
the cat sat
the dog ran far away
the

a b c d e
b c d e c d e d e e
"""
# Stream, with </s> after every line: the cat sat </s> | the dog ran far away </s> | the </s>
# | </s> (document break) | a b c d e </s> | b c d e c d e d e e </s>
VALID = "the dog sat\n"
TEST = "cat ran\n"
SECOND_SHARD_TRAIN = "sat sat\nran ran\n"


def preprocess(directory: Path, train: str, srcdict: str = None) -> str:
    from fairseq_cli import preprocess as preprocess_cli

    directory.mkdir(parents=True, exist_ok=True)
    for split, text in (("train", train), ("valid", VALID), ("test", TEST)):
        (directory / f"{split}.txt").write_text(text, encoding="utf-8")
    dest = directory / "bin"
    argv = ["--only-source", "--trainpref", str(directory / "train.txt"),
            "--validpref", str(directory / "valid.txt"), "--testpref", str(directory / "test.txt"),
            "--destdir", str(dest), "--workers", "1"]
    if srcdict is not None:
        argv += ["--srcdict", srcdict]
    preprocess_cli.cli_main(argv)
    return str(dest)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    return preprocess(tmp_path_factory.mktemp("lm") / "first", TRAIN)


def make_task(data: str, *overrides: str):
    cfg = compose_config([f"task.data={data}", *overrides]).task
    return tasks.setup_task(cfg)


def words(task, tokens: torch.Tensor, dictionary=None) -> str:
    """Tokens as text, keeping </s>, <s> and <pad> visible."""
    dictionary = dictionary or task.source_dictionary
    return " ".join(dictionary[int(i)] for i in tokens)


def samples(task, split: str = "train", epoch: int = 1):
    """(source, target) text of every sample, in dataset order."""
    task.load_dataset(split, epoch=epoch)
    dataset = task.dataset(split)
    return [(words(task, dataset[i]["source"]), words(task, dataset[i]["target"], task.target_dictionary))
            for i in range(len(dataset))]


def targets(task, split: str = "train", epoch: int = 1):
    return [target for _, target in samples(task, split, epoch)]


# -- sample_break_mode: which tokens land in which sample ----------------------------------------
def test_none_mode_cuts_the_stream_into_equal_blocks_and_the_source_continues_it(corpus):
    task = make_task(corpus, "task.sample_break_mode=none", "task.tokens_per_sample=5")
    assert samples(task) == [
        ("</s> the cat sat </s>", "the cat sat </s> the"),
        ("the dog ran far away", "dog ran far away </s>"),
        ("</s> the </s> </s> a", "the </s> </s> a b"),
        ("b c d e </s>", "c d e </s> b"),
        ("b c d e c", "c d e c d"),
        ("d e d e e", "e d e e </s>"),
    ]


def test_complete_mode_packs_whole_sentences_and_keeps_longer_ones_whole(corpus):
    task = make_task(corpus, "task.sample_break_mode=complete", "task.tokens_per_sample=8")
    assert targets(task) == [
        "the cat sat </s>",  # the next sentence (6 tokens) does not fit
        "the dog ran far away </s> the </s>",
        "</s> a b c d e </s>",  # the empty line is a sentence like any other here
        "b c d e c d e d e e </s>",  # an 11-token sentence stays whole, as in fairseq
    ]


def test_complete_mode_sources_restart_at_each_sentence(corpus):
    task = make_task(corpus, "task.sample_break_mode=complete", "task.tokens_per_sample=8")
    sources = [source for source, _ in samples(task)]
    assert sources == [
        "</s> the cat sat",
        "</s> the dog ran far away </s> the",
        "</s> </s> a b c d e",
        "</s> b c d e c d e d e e",  # the long sentence stays whole, its source too
    ]


def test_complete_doc_mode_never_crosses_the_empty_line(corpus):
    task = make_task(corpus, "task.sample_break_mode=complete_doc", "task.tokens_per_sample=12")
    assert targets(task) == [
        "the cat sat </s> the dog ran far away </s> the </s>",  # document 1 fills 12 exactly
        "a b c d e </s>",  # the separator belongs to no sample; the next sentence (11) does not fit
        "b c d e c d e d e e </s>",
    ]
    complete = make_task(corpus, "task.sample_break_mode=complete", "task.tokens_per_sample=12")
    assert targets(complete)[1] == "</s> a b c d e </s>"  # complete keeps the separator


def test_eos_mode_gives_one_sentence_per_sample(corpus):
    task = make_task(corpus, "task.sample_break_mode=eos", "task.tokens_per_sample=6")
    assert samples(task) == [
        ("</s> the cat sat", "the cat sat </s>"),
        ("</s> the dog ran far away", "the dog ran far away </s>"),
        ("</s> the", "the </s>"),
        ("</s>", "</s>"),  # the empty line
        ("</s> a b c d e", "a b c d e </s>"),
        # 11 tokens: longer than tokens_per_sample, kept whole as in fairseq; batching drops
        # it in training and refuses it elsewhere (see the test below)
        ("</s> b c d e c d e d e e", "b c d e c d e d e e </s>"),
    ]


@pytest.mark.parametrize("mode", ["none", "complete", "complete_doc", "eos"])
def test_every_mode_shifts_the_target_by_one_and_batches_fit_tokens_per_sample(corpus, mode):
    from fairseq.data.errors import DataError

    task = make_task(corpus, f"task.sample_break_mode={mode}", "task.tokens_per_sample=4")
    task.load_dataset("train")
    dataset = task.dataset("train")
    if mode == "none":
        assert dataset.sizes.max() <= 4 == task.max_positions()
    for i in range(len(dataset)):
        source, target = dataset[i]["source"], dataset[i]["target"]
        assert source.shape == target.shape
        assert torch.equal(source[1:], target[:-1])  # position t predicts the token after t
    batch = dataset.collater([dataset[i] for i in range(len(dataset))])
    assert batch["ntokens"] == int(dataset.sizes.sum())
    # a sentence longer than tokens_per_sample stays one sample (fairseq's rule); training
    # skips it, validation refuses it unless told to skip
    kwargs = dict(max_tokens=64, max_positions=task.max_positions())
    kept = [i for b in task.get_batch_iterator(dataset, ignore_invalid_inputs=True, **kwargs)
            .next_epoch_itr(shuffle=False) for i in b["id"].tolist()]
    assert sorted(kept) == [i for i in range(len(dataset)) if dataset.sizes[i] <= 4]
    if dataset.sizes.max() > 4:
        with pytest.raises(DataError, match="skip-invalid-size-inputs-valid-test"):
            task.get_batch_iterator(dataset, ignore_invalid_inputs=False, **kwargs)


def test_valid_and_test_splits_load_the_same_way(corpus):
    task = make_task(corpus, "task.sample_break_mode=eos")
    assert samples(task, "valid") == [("</s> the dog sat", "the dog sat </s>")]
    assert samples(task, "test") == [("</s> cat ran", "cat ran </s>")]


# -- vocabulary and bos ---------------------------------------------------------------------------
def test_output_dictionary_size_keeps_the_most_frequent_words_as_targets(corpus):
    full = make_task(corpus, "task.sample_break_mode=eos")
    assert full.source_dictionary.symbols[4:6] == ["e", "d"]
    assert set(full.source_dictionary.symbols[6:8]) == {"c", "the"}
    task = make_task(corpus, "task.sample_break_mode=eos", "task.output_dictionary_size=6")
    assert len(task.target_dictionary) == 6 and len(task.source_dictionary) == len(full.source_dictionary)
    # the input keeps every word; targets beyond the first 6 symbols become <unk>
    assert samples(task)[4] == ("</s> a b c d e", "<unk> <unk> <unk> d e </s>")
    assert samples(task)[0] == ("</s> the cat sat", "<unk> <unk> <unk> </s>")
    assert task.target_dictionary.index("the") == task.target_dictionary.unk()


def test_output_dictionary_size_below_the_special_symbols_is_refused(corpus):
    with pytest.raises(ValueError, match="output_dictionary_size=2.*at least 4"):
        make_task(corpus, "task.output_dictionary_size=2")


def test_add_bos_token_starts_every_sample_with_bos(corpus):
    task = make_task(corpus, "task.sample_break_mode=eos", "task.tokens_per_sample=5", "task.add_bos_token=true")
    # as in fairseq, source and target both start with <s> (eval-lm leaves that first score out)
    assert samples(task)[:2] == [
        ("<s> </s> the cat sat", "<s> the cat sat </s>"),
        ("<s> </s> the dog ran far away", "<s> the dog ran far away </s>"),
    ]
    task.load_dataset("train")
    batch = task.dataset("train").collater([task.dataset("train")[0]])
    assert batch["ntokens"] == 5  # fairseq counts the source tokens


# -- shortening ----------------------------------------------------------------------------------
def test_truncate_shortens_only_the_listed_splits(corpus):
    task = make_task(corpus, "task.sample_break_mode=eos", "task.tokens_per_sample=3",
                     "task.shorten_method=truncate", "task.shorten_data_split_list=train")
    assert targets(task) == ["the cat sat", "the dog ran", "the </s>", "</s>", "a b c", "b c d"]
    assert targets(task, "valid") == ["the dog sat </s>"]  # not listed: not truncated


def test_empty_split_list_shortens_every_split(corpus):
    task = make_task(corpus, "task.sample_break_mode=eos", "task.tokens_per_sample=3",
                     "task.shorten_method=truncate")
    assert targets(task, "valid") == ["the dog sat"]


def test_random_crop_keeps_a_window_that_depends_on_seed_and_epoch(corpus):
    overrides = ["task.sample_break_mode=eos", "task.tokens_per_sample=4",
                 "task.shorten_method=random_crop", "task.shorten_data_split_list='train,test'"]

    def crops(epoch, seed=1):
        task = make_task(corpus, *overrides, f"common.seed={seed}")
        return [t.split() for t in targets(task, epoch=epoch)]

    first = crops(1)
    assert first == crops(1)  # deterministic
    assert [len(t) for t in first] == [4, 4, 2, 1, 4, 4]  # one sample per sentence, cropped to 4
    long_sentence = "b c d e c d e d e e </s>".split()
    windows = {" ".join(long_sentence[i:i + 4]) for i in range(len(long_sentence) - 3)}
    across = [crops(epoch) for epoch in (1, 2, 3, 4)] + [crops(1, seed) for seed in (2, 3, 4)]
    assert all(" ".join(c[5]) in windows for c in across)
    assert len({" ".join(c[5]) for c in across}) > 1  # the window moves with epoch and seed
    assert first[0] == ["the", "cat", "sat", "</s>"]  # a sentence that fits is kept whole


def test_random_crop_is_redrawn_by_set_epoch_without_reloading(corpus):
    task = make_task(corpus, "task.sample_break_mode=eos", "task.tokens_per_sample=4",
                     "task.shorten_method=random_crop")
    task.load_dataset("train")
    dataset = task.dataset("train")
    seen = set()
    for epoch in range(1, 9):
        dataset.set_epoch(epoch)
        seen.add(words(task, dataset[5]["target"]))
    assert len(seen) > 1
    dataset.set_epoch(1)
    assert words(task, dataset[5]["target"]) == targets(task, epoch=1)[5]


# -- shards --------------------------------------------------------------------------------------
def test_training_rotates_over_shards_by_epoch_and_other_splits_use_the_first(corpus, tmp_path):
    second = preprocess(tmp_path / "second", SECOND_SHARD_TRAIN, srcdict=str(Path(corpus) / "dict.txt"))
    task = make_task(f"{corpus}:{second}", "task.sample_break_mode=eos")
    first_train = targets(task, epoch=1)
    assert first_train[0] == "the cat sat </s>"
    assert targets(task, epoch=2) == ["sat sat </s>", "ran ran </s>"]
    assert targets(task, epoch=3) == first_train
    for epoch in (1, 2):
        assert targets(task, "valid", epoch=epoch) == ["the dog sat </s>"]


def test_missing_split_and_missing_dictionary_say_what_is_there(corpus, tmp_path):
    task = make_task(corpus)
    with pytest.raises(FileNotFoundError, match=r"'nosuch' not found.*\['test', 'train', 'valid'\]"):
        task.load_dataset("nosuch")
    with pytest.raises(FileNotFoundError, match="dict.txt does not exist.*fairseq-preprocess"):
        make_task(str(tmp_path))


# -- targets -------------------------------------------------------------------------------------
def test_future_is_the_default_target_and_others_are_refused_by_the_model(corpus):
    tiny = ["model.decoder_layers=1", "model.decoder_embed_dim=8", "model.decoder_input_dim=8",
            "model.decoder_output_dim=8", "model.decoder_ffn_embed_dim=8", "model.decoder_attention_heads=1"]
    cfg = compose_config([f"task.data={corpus}", *tiny])
    assert tasks.setup_task(cfg.task).targets == ["future"]
    cfg = compose_config([f"task.data={corpus}", "task.self_target=true", *tiny])
    task = tasks.setup_task(cfg.task)
    assert task.targets == ["self"]
    with pytest.raises(ValueError, match=r"task.self_target=true \(--self-target\).*only predicts \['future'\]"):
        task.build_model(cfg.model)
    with pytest.raises(ValueError, match="task.future_target, task.past_target are all set"):
        make_task(corpus, "task.future_target=true", "task.past_target=true")


# -- the three ways of giving the config ---------------------------------------------------------
def test_dataclass_dictconfig_and_namespace_give_equal_configs(corpus):
    values = dict(data=corpus, tokens_per_sample=7, sample_break_mode="complete", add_bos_token=True,
                  output_dictionary_size=9, shorten_method="truncate", shorten_data_split_list="train")
    from_dataclass = tasks.setup_task(LanguageModelingConfig(**values))
    from_dictconfig = make_task(corpus, *(f"task.{k}={v}" for k, v in values.items() if k != "data"))
    from_namespace = tasks.setup_task(argparse.Namespace(task="language_modeling", **values))
    configs = [OmegaConf.to_container(t.cfg, resolve=True) for t in (from_dataclass, from_dictconfig, from_namespace)]
    assert configs[0] == configs[1] == configs[2]
    assert configs[0]["seed"] == 1 and configs[0]["dataset_impl"] is None and configs[0]["train_subset"] == "train"
    for task in (from_dataclass, from_dictconfig, from_namespace):
        assert len(task.target_dictionary) == 9
    assert targets(from_dataclass) == targets(from_namespace) == targets(from_dictconfig)


def test_the_seed_follows_common_seed(corpus):
    assert make_task(corpus, "common.seed=5").cfg.seed == 5
    namespace = argparse.Namespace(task="language_modeling", data=corpus, seed=5)
    assert tasks.setup_task(namespace).cfg.seed == 5


# -- the Python API without data on disk ---------------------------------------------------------
class ListDataset(torch.utils.data.Dataset):
    """Items given in memory, with the ``sizes`` a dataset of sentences has."""

    def __init__(self, items):
        self.items = items
        self.sizes = [len(t) for t in items]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def small_dictionary(n: int = 10):
    from fairseq.data import Dictionary

    dictionary = Dictionary()
    for i in range(n):
        dictionary.add_symbol(f"w{i}")
    return dictionary


def test_task_is_built_from_a_dataclass_without_data_and_batches_with_a_context_window():
    from fairseq.data import MonolingualDataset, TokenBlockDataset
    from fairseq.tasks.language_modeling import LanguageModelingTask

    dictionary = small_dictionary()
    assert len(dictionary) == 14 and dictionary.pad() == 1
    stream = ListDataset([torch.arange(4, 14)])  # one sentence of 10 tokens: 4 .. 13
    blocks = TokenBlockDataset(stream, stream.sizes, 4, pad=dictionary.pad(), eos=dictionary.eos(),
                               break_mode="none", include_targets=True)
    dataset = MonolingualDataset(blocks, blocks.sizes, dictionary, targets=["future"])
    task = LanguageModelingTask(LanguageModelingConfig(tokens_per_sample=4), dictionary)
    assert task.targets == ["future"] and task.target_dictionary is dictionary
    batches = list(task.eval_lm_dataloader(dataset=dataset, batch_size=1, context_window=2, num_workers=0))
    rows = [(b["net_input"]["src_tokens"][0].tolist(), b["target"][0].tolist(), b["start_indices"][0])
            for b in batches]
    eos, pad = dictionary.eos(), dictionary.pad()
    # the source is the stream shifted right by one; each block gets the 2 source tokens before it
    assert rows == [
        ([eos, 4, 5, 6, pad, pad], [4, 5, 6, 7, pad, pad], 0),
        ([5, 6, 7, 8, 9, 10], [pad, pad, 8, 9, 10, 11], 2),
        ([9, 10, 11, 12], [pad, pad, 12, 13], 2),
    ]
    assert [b["net_input"]["src_lengths"][0].item() for b in batches] == [4, 6, 4]


def test_eval_lm_dataloader_without_context_keeps_the_blocks_and_refuses_a_negative_window():
    from fairseq.data import MonolingualDataset, TokenBlockDataset
    from fairseq.dataclass.overrides import ConfigError
    from fairseq.tasks.language_modeling import LanguageModelingTask

    dictionary = small_dictionary()
    stream = ListDataset([torch.arange(4, 14)])
    blocks = TokenBlockDataset(stream, stream.sizes, 4, pad=1, eos=2, break_mode="none", include_targets=True)
    dataset = MonolingualDataset(blocks, blocks.sizes, dictionary, targets=["future"])
    task = LanguageModelingTask(LanguageModelingConfig(tokens_per_sample=4), dictionary, targets=["future"])
    batches = list(task.eval_lm_dataloader(dataset=dataset, max_tokens=8, num_workers=0))
    targets = sorted(row for b in batches for row in b["target"].tolist())
    assert targets == [[4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 1, 1]]
    assert all("start_indices" not in b for b in batches)
    with pytest.raises(ConfigError, match="context_window=-1"):
        task.eval_lm_dataloader(dataset=dataset, context_window=-1)


def test_setup_task_takes_a_namespace_or_a_dictconfig(corpus):
    from fairseq.tasks.language_modeling import LanguageModelingTask

    namespace = argparse.Namespace(task="language_modeling", data=corpus, tokens_per_sample=8)
    from_namespace = tasks.setup_task(namespace)
    from_dictconfig = tasks.setup_task(OmegaConf.structured(LanguageModelingConfig(data=corpus, tokens_per_sample=8)))
    from_classmethod = LanguageModelingTask.setup_task(LanguageModelingConfig(data=corpus, tokens_per_sample=8))
    for task in (from_namespace, from_dictconfig, from_classmethod):
        assert isinstance(task, LanguageModelingTask)
        assert task.cfg.tokens_per_sample == 8
        assert len(task.source_dictionary) == len(from_namespace.source_dictionary)


def test_context_window_batches_of_plain_token_items_follow_fairseq():
    """fairseq's own example: items without targets are their own targets."""
    from fairseq.data import MonolingualDataset
    from fairseq.tasks.language_modeling import LanguageModelingTask

    dictionary = small_dictionary()
    items = ListDataset([torch.tensor([4, 5, 6, 7]), torch.tensor([8, 9, 10, 11]), torch.tensor([12, 13])])
    dataset = MonolingualDataset(items, sizes=[4, 4, 2], src_vocab=dictionary)
    task = LanguageModelingTask(LanguageModelingConfig(tokens_per_sample=4), dictionary)
    loader = task.eval_lm_dataloader(dataset=dataset, batch_size=1, context_window=2, num_workers=0)
    rows = [(b["net_input"]["src_tokens"][0].tolist(), b["target"][0].tolist()) for b in loader]
    assert rows == [([4, 5, 6, 7, 1, 1], [4, 5, 6, 7, 1, 1]),
                    ([6, 7, 8, 9, 10, 11], [1, 1, 8, 9, 10, 11]),
                    ([10, 11, 12, 13], [1, 1, 12, 13])]
