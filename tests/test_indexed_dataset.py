"""Memory-mapped indexed datasets: writing, merging, reading and corruption checks."""
import os
import pickle
import shutil
import struct

import numpy as np
import pytest
import torch

from fairseq.data import indexed_dataset
from fairseq.data.indexed_dataset import (
    MMapIndexedDataset,
    MMapIndexedDatasetBuilder,
    best_fitting_int_dtype,
    data_file_path,
    index_file_path,
    make_builder,
    make_dataset,
)

SEQUENCES = [[5, 6, 7, 2], [2], [9, 10, 2], []]


def write_dataset(prefix, sequences, dtype=np.int64):
    builder = MMapIndexedDatasetBuilder(data_file_path(prefix), dtype=dtype)
    for sequence in sequences:
        builder.add_item(torch.tensor(sequence, dtype=torch.int32))
    builder.finalize(index_file_path(prefix))


def as_lists(dataset):
    return [dataset[i].tolist() for i in range(len(dataset))]


def test_paths_and_dtype_choice():
    assert data_file_path("a/train") == "a/train.bin"
    assert index_file_path("a/train") == "a/train.idx"
    assert best_fitting_int_dtype(1000) == np.uint16
    assert best_fitting_int_dtype(65499) == np.uint16
    assert best_fitting_int_dtype(70000) == np.uint32
    assert best_fitting_int_dtype(None) == np.uint32
    assert best_fitting_int_dtype(2**32) == np.int64


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.int64])
def test_roundtrip(tmp_path, dtype):
    prefix = str(tmp_path / "data")
    write_dataset(prefix, SEQUENCES, dtype)
    dataset = MMapIndexedDataset(prefix)
    assert len(dataset) == 4
    assert dataset.sizes.tolist() == [4, 1, 3, 0]
    assert as_lists(dataset) == SEQUENCES
    assert dataset[0].dtype == torch.int64
    assert dataset[-2].tolist() == [9, 10, 2]
    assert dataset.dtype == np.dtype(dtype)
    with pytest.raises(IndexError):
        dataset[4]


def test_make_builder_picks_small_dtype_and_make_dataset(tmp_path):
    prefix = str(tmp_path / "small")
    builder = make_builder(data_file_path(prefix), "mmap", vocab_size=100)
    builder.add_item(torch.tensor([1, 99]))
    builder.finalize(index_file_path(prefix))
    assert (tmp_path / "small.bin").stat().st_size == 2 * 2  # two uint16 tokens
    dataset = make_dataset(prefix)
    assert dataset.dtype == np.uint16 and dataset[0].tolist() == [1, 99]
    assert make_dataset(str(tmp_path / "absent")) is None
    assert indexed_dataset.dataset_exists(prefix) and not indexed_dataset.dataset_exists(str(tmp_path / "absent"))


def test_unsupported_impl_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="'raw' is not supported"):
        make_builder(str(tmp_path / "x.bin"), "raw")


def test_builder_rejects_ids_that_do_not_fit(tmp_path):
    builder = MMapIndexedDatasetBuilder(str(tmp_path / "x.bin"), dtype=np.uint16)
    with pytest.raises(ValueError, match="does not fit dtype uint16"):
        builder.add_item(torch.tensor([70000]))


def test_merge_file_appends_shards_in_order(tmp_path):
    first, second, merged = (str(tmp_path / name) for name in ("first", "second", "merged"))
    write_dataset(first, SEQUENCES[:2], np.uint16)
    write_dataset(second, SEQUENCES[2:], np.uint16)
    write_dataset(str(tmp_path / "whole"), SEQUENCES, np.uint16)

    builder = MMapIndexedDatasetBuilder(data_file_path(merged), dtype=np.uint16)
    builder.merge_file_(first)
    builder.merge_file_(second)
    builder.finalize(index_file_path(merged))

    assert as_lists(MMapIndexedDataset(merged)) == SEQUENCES
    for suffix in (".bin", ".idx"):
        assert (tmp_path / f"merged{suffix}").read_bytes() == (tmp_path / f"whole{suffix}").read_bytes()


def test_merge_rejects_other_dtype(tmp_path):
    write_dataset(str(tmp_path / "wide"), SEQUENCES, np.int64)
    builder = MMapIndexedDatasetBuilder(str(tmp_path / "narrow.bin"), dtype=np.uint16)
    with pytest.raises(ValueError, match="same dictionary"):
        builder.merge_file_(str(tmp_path / "wide"))


def test_corrupt_or_truncated_index_is_reported(tmp_path):
    prefix = str(tmp_path / "data")
    write_dataset(prefix, SEQUENCES)
    index = tmp_path / "data.idx"
    good = index.read_bytes()

    index.write_bytes(b"garbage" + good[7:])
    with pytest.raises(ValueError, match=r"data\.idx is not a fairseq mmap index .*rerun fairseq-preprocess"):
        MMapIndexedDataset(prefix)

    index.write_bytes(good[:-5])
    with pytest.raises(ValueError, match="truncated"):
        MMapIndexedDataset(prefix)

    index.write_bytes(good)
    (tmp_path / "data.bin").write_bytes(b"\x00" * 3)
    with pytest.raises(ValueError, match=r"data\.bin has 3 bytes"):
        MMapIndexedDataset(prefix)


def test_pickle_carries_only_the_prefix(tmp_path):
    prefix = str(tmp_path / "data")
    write_dataset(prefix, SEQUENCES)
    dataset = MMapIndexedDataset(prefix)
    payload = pickle.dumps(dataset)
    assert len(payload) < 300
    clone = pickle.loads(payload)
    assert as_lists(clone) == SEQUENCES


def test_dataloader_workers_can_read(tmp_path):
    prefix = str(tmp_path / "data")
    write_dataset(prefix, SEQUENCES[:3])
    loader = torch.utils.data.DataLoader(
        MMapIndexedDataset(prefix), batch_size=None, num_workers=1, multiprocessing_context="fork"
    )
    assert [item.tolist() for item in loader] == SEQUENCES[:3]


FIXTURE_BIN = os.path.join(os.path.dirname(__file__), "fixtures", "fairseq_0_12", "data-bin")


def test_index_layout_is_fairseqs_byte_for_byte(tmp_path):
    prefix = str(tmp_path / "data")
    write_dataset(prefix, SEQUENCES, np.uint16)
    raw = (tmp_path / "data.idx").read_bytes()
    header = b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + struct.pack("<B", 8) + struct.pack("<Q", 4)
    sizes = np.array([4, 1, 3, 0], dtype="<i4").tobytes()
    pointers = np.array([0, 8, 10, 16], dtype="<i8").tobytes()  # uint16: 2 bytes per token
    assert raw == header + sizes + pointers


def test_reads_the_index_fairseq_wrote():
    dataset = MMapIndexedDataset(os.path.join(FIXTURE_BIN, "valid"))
    assert dataset.dtype == np.uint16
    assert len(dataset) == 436 and int(dataset.sizes.sum()) == 3477
    assert all(int(dataset[i][-1]) == 2 for i in range(0, 436, 50))  # every line ends in eos


def write_legacy_index(path, dtype_code, sizes):
    """The layout earlier versions of this package wrote: a document index after the pointers."""
    sizes = np.asarray(sizes, dtype="<i4")
    pointers = np.concatenate([[0], np.cumsum(sizes[:-1])]).astype("<i8") * 2
    doc_idx = np.array([0, len(sizes)], dtype="<i8")
    with open(path, "wb") as file:
        file.write(b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, dtype_code, len(sizes), len(doc_idx)))
        file.write(sizes.tobytes() + pointers.tobytes() + doc_idx.tobytes())


def test_index_of_earlier_versions_is_still_read_and_can_be_rewritten(tmp_path, caplog):
    prefix = str(tmp_path / "old")
    write_dataset(prefix, SEQUENCES, np.uint16)
    write_legacy_index(index_file_path(prefix), 8, [4, 1, 3, 0])
    with caplog.at_level("WARNING"):
        dataset = MMapIndexedDataset(prefix)
    assert as_lists(dataset) == SEQUENCES
    assert "rerun fairseq-preprocess" in caplog.text

    # merging an old shard produces fairseq's layout
    builder = MMapIndexedDatasetBuilder(str(tmp_path / "new.bin"), dtype=np.uint16)
    builder.merge_file_(prefix)
    builder.finalize(str(tmp_path / "new.idx"))
    write_dataset(str(tmp_path / "ref"), SEQUENCES, np.uint16)
    assert (tmp_path / "new.idx").read_bytes() == (tmp_path / "ref.idx").read_bytes()


def test_fairseq_data_bin_merges_back_to_the_same_bytes(tmp_path):
    for suffix in (".bin", ".idx"):
        shutil.copy(os.path.join(FIXTURE_BIN, "test" + suffix), tmp_path / ("part" + suffix))
    builder = make_builder(str(tmp_path / "copy.bin"), "mmap", vocab_size=1000)
    builder.merge_file_(str(tmp_path / "part"))
    builder.finalize(str(tmp_path / "copy.idx"))
    for suffix in (".bin", ".idx"):
        with open(os.path.join(FIXTURE_BIN, "test" + suffix), "rb") as reference:
            assert (tmp_path / ("copy" + suffix)).read_bytes() == reference.read()
