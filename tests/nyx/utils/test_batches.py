"""``chunked``: slices of a sequence (its own type), lazy lists from a stream, one chunk for ``size`` <= 0."""

from __future__ import annotations

import itertools

import pytest
import torch

from nyx.utils.batches import chunked


def test_a_list_is_cut_into_slices_the_last_one_shorter():
    assert list(chunked([1, 2, 3, 4, 5], 2)) == [[1, 2], [3, 4], [5]]
    assert list(chunked((1, 2, 3), 2)) == [(1, 2), (3,)]


def test_a_tensor_is_cut_into_row_slices_not_lists_of_rows():
    chunks = list(chunked(torch.arange(10).reshape(5, 2), 2))
    assert [c.shape[0] for c in chunks] == [2, 2, 1] and all(isinstance(c, torch.Tensor) for c in chunks)
    assert torch.equal(torch.cat(chunks), torch.arange(10).reshape(5, 2))


def test_a_stream_is_read_lazily_into_lists():
    stream = itertools.count()  # endless: only what is asked for is read
    first = next(chunked(stream, 3))
    assert first == [0, 1, 2] and next(stream) == 3
    assert list(chunked((i for i in range(5)), 2)) == [[0, 1], [2, 3], [4]]
    assert list(chunked({"a": 1, "b": 2}, 1)) == [["a"], ["b"]]  # a mapping is iterated (its keys), never sliced


@pytest.mark.parametrize("size", [0, -1, 5, 100])
def test_size_not_below_the_length_or_not_positive_gives_one_chunk(size):
    assert list(chunked([1, 2, 3, 4, 5], size)) == [[1, 2, 3, 4, 5]]
    assert list(chunked(iter([1, 2, 3, 4, 5]), size)) == [[1, 2, 3, 4, 5]]


def test_empty_input_gives_no_chunk():
    assert list(chunked([], 3)) == [] and list(chunked(iter([]), 3)) == [] and list(chunked([], 0)) == []
