"""Real datasets from disk: ``root/<domain>/<class>/<image>`` folders and torchvision's digits.

The ``folder`` task reads any dataset in that layout (how PACS, VLCS,
OfficeHome, TerraIncognita, DomainNet and Office-31 are distributed); the
presets ``pacs``, ``vlcs``, ``officehome``, ``terraincognita``, ``domainnet``
and ``office31`` add each one's real domain and class names. Decoded images
are cached as one uint8 tensor file per domain (``torch.save``), keyed by a
hash of the file list (paths, sizes, modification times) and the resolution,
so a second build reads that file instead of decoding again. Nothing is ever
downloaded.

A disk task's identity is its content, never its location: ``fingerprint()``
hashes the sorted relative file list, each file's size and its bytes (all of a
file up to ``FULL_HASH_BYTES``, else its head, middle and tail), so the same data
moved keeps its job ids and different data under the same ``root`` gets new
ones. Per-file digests are cached by (path, size, mtime, inode) beside the image
cache, so a second plan only stats the files.
"""

from __future__ import annotations

import abc
import concurrent.futures
import hashlib
import json
import os
import tempfile
import time
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xbench.errors import ConfigError
from xbench.registry import register_task
from xbench.tasks.base import Budget, Split, Task, split_indices
from xbench.tasks.catalog import DIGITS, PRESETS, DatasetInfo

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
#: Fractions of each domain in train / val / test.
FRACTIONS = (0.7, 0.1, 0.2)
CACHE_FORMAT = "xbench.folder-cache/2"  # 2: 16-bit and float images scaled, not clipped
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_cache_dir() -> Path:
    """``$XBENCH_CACHE`` if set, else ``~/.cache/xbench``."""
    return Path(os.environ.get("XBENCH_CACHE") or Path.home() / ".cache" / "xbench")


def is_image(name: str) -> bool:
    """True for file names with a known image extension (any case)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def subfolders(path: Path) -> list[str]:
    """Names of the visible sub-folders of ``path``, sorted."""
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def class_images(class_dir: Path) -> list[str]:
    """Image files under ``class_dir`` (recursively), as sorted paths relative to it; hidden
    files and folders (macOS ``._*`` AppleDouble files among them) are skipped."""
    found = []
    for folder, dirs, files in os.walk(class_dir):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = os.path.relpath(folder, class_dir)
        found += [f if rel == "." else os.path.join(rel, f) for f in files
                  if is_image(f) and not f.startswith(".")]
    return sorted(found)


def hidden_images(class_dir: Path) -> list[str]:
    """Hidden image-named files under ``class_dir`` (e.g. macOS ``._x.jpg``), which are skipped."""
    found = []
    for folder, dirs, files in os.walk(class_dir):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [os.path.join(folder, f) for f in files if is_image(f) and f.startswith(".")]
    return sorted(found)


def _to_uint8(image: Any) -> Any:
    """16-bit, 32-bit integer and float images scaled to 8 bits (PIL's convert would clip)."""
    from PIL import Image

    if image.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return image
    array = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        finite = array[np.isfinite(array)]
        top = float(finite.max()) if finite.size else 0.0
        scale = 255.0 if top <= 1.0 else (1.0 if top <= 255.0 else 255.0 / top)
        array = np.nan_to_num(array, nan=0.0) * scale
    else:
        top = float(array.max()) if array.size else 0.0
        scale = 255.0 / 65535.0 if image.mode.startswith("I;16") or top > 255 else 1.0
        if top > 65535:
            scale = 255.0 / top
        array = array * scale
    return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), mode="L")


def open_image(path: str, draft: int | None = None) -> Any:
    """The fully decoded image at ``path``; raises ``ValueError`` with the reason (an empty
    file, a dangling link, not an image, truncated, or over Pillow's decompression-bomb limit)."""
    import warnings as _warnings

    from PIL import Image

    if os.path.islink(path) and not os.path.exists(path):
        raise ValueError("dangling symbolic link")
    try:
        if os.path.getsize(path) == 0:
            raise ValueError("empty file (0 bytes)")
        with _warnings.catch_warnings():
            _warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            if draft:
                image.draft("RGB", (draft, draft))  # JPEG: decode at reduced size
            image.load()
        return image
    except ValueError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"too large to decode safely ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises OSError, SyntaxError, struct.error...
        raise ValueError(f"{type(exc).__name__}: {exc}") from None


def domain_dir(root: Path, domain: str, inner: str = "") -> Path:
    """``root/domain``, or ``root/domain/inner`` when that exists (Office-31's ``images``)."""
    path = root / domain
    return path / inner if inner and (path / inner).is_dir() else path


def decode(path: str, resolution: int) -> np.ndarray:
    """One image file as an RGB uint8 array (3, R, R), resized with antialiasing."""
    from PIL import Image

    try:
        image = _to_uint8(open_image(path, draft=resolution))
        image = image.convert("RGB").resize((resolution, resolution), Image.BILINEAR)
        return np.array(image, dtype=np.uint8).transpose(2, 0, 1)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot decode image '{path}' ({exc}); remove or replace "
                          f"the file (`xbench data check` lists every such file)") from None


def decode_all(paths: list[str], resolution: int) -> torch.Tensor:
    """Decode ``paths`` with a thread pool (PIL releases the GIL): uint8 (N, 3, R, R)."""
    out = torch.empty(len(paths), 3, resolution, resolution, dtype=torch.uint8)
    workers = min(8, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for i, array in enumerate(pool.map(lambda p: decode(p, resolution), paths)):
            out[i] = torch.from_numpy(array)
    return out


def file_list_key(base: Path, files: list[str], resolution: int) -> str:
    """Hash of the file list (relative path, size, mtime) and resolution: the cache key."""
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{resolution}".encode())
    for rel in files:
        stat = os.stat(base / rel)
        digest.update(f"|{rel}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


#: Version of the content fingerprint (bump when what is hashed changes).
FINGERPRINT_FORMAT = "xbench.content/1"
#: Files up to this size are hashed whole; larger ones by head, middle and tail.
FULL_HASH_BYTES = 8 << 20
SAMPLE_BYTES = 1 << 20
#: A cached digest is trusted only for files last modified this long before it was
#: computed (a file rewritten within the file system's timestamp granularity keeps its
#: mtime: the "racy git" problem), so a cached digest never hides an edit.
RACY_NS = 3_000_000_000


def file_digest(path: str, size: int) -> str:
    """SHA-256 of the file's bytes: all of them up to ``FULL_HASH_BYTES``, else a
    deterministic sample (head, middle and tail, ``SAMPLE_BYTES`` each) and the size."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= FULL_HASH_BYTES:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        else:
            digest.update(f"sampled|{size}".encode())
            for offset in (0, (size - SAMPLE_BYTES) // 2, size - SAMPLE_BYTES):
                f.seek(offset)
                digest.update(f.read(SAMPLE_BYTES))
    return digest.hexdigest()


def content_fingerprint(files: list[tuple[str, Path]], cache_file: Path | None = None) -> str:
    """A 16-hex-digit fingerprint of ``files`` (``(relative name, path)`` pairs): the
    sorted relative names, each file's size and :func:`file_digest`; no absolute path.

    Digests are cached in ``cache_file`` (JSON) keyed by relative name and checked
    against (size, mtime, inode); a file modified within ``RACY_NS`` of when its
    digest was computed is hashed again. An unwritable cache only costs re-hashing.
    """
    cached: dict[str, Any] = {}
    if cache_file is not None:
        try:
            loaded = json.loads(cache_file.read_text())
            if isinstance(loaded, dict) and loaded.get("format") == FINGERPRINT_FORMAT and \
                    isinstance(loaded.get("files"), dict):
                cached = loaded["files"]
        except (OSError, ValueError):
            pass
    now = time.time_ns()
    digest = hashlib.sha256(FINGERPRINT_FORMAT.encode())
    fresh: dict[str, Any] = {}
    for rel, path in sorted(files, key=lambda item: item[0]):
        stat = os.stat(path)  # follows links: the content is what counts
        key = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        entry = cached.get(rel)
        if isinstance(entry, list) and len(entry) == 5 and entry[:3] == key and \
                isinstance(entry[3], int) and stat.st_mtime_ns < entry[3] - RACY_NS:
            file_hash = entry[4]
        else:
            file_hash = file_digest(str(path), stat.st_size)
            entry = [*key, now, file_hash]
        fresh[rel] = entry
        digest.update(f"|{rel}|{stat.st_size}|{file_hash}".encode())
    if cache_file is not None and fresh != cached:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cache_file.parent, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump({"format": FINGERPRINT_FORMAT, "files": fresh}, f)
            os.replace(tmp, cache_file)
        except OSError:
            pass
    return digest.hexdigest()[:16]


def load_images(base: Path, files: list[str], resolution: int, cache_dir: Path,
                tag: str) -> torch.Tensor:
    """The images ``base/files`` decoded at ``resolution``, through the cache in ``cache_dir``.

    A cached file is memory-mapped on load; a missing one is decoded and
    written atomically (temporary file, then rename).
    """
    key = file_list_key(base, files, resolution)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in tag)
    path = cache_dir / f"{safe}-{resolution}px-{key}.pt"
    if path.is_file():
        return torch.load(path, mmap=True, weights_only=True)["x"]
    x = decode_all([str(base / f) for f in files], resolution)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"x": x, "files": files}, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        warnings.warn(f"could not write the image cache '{path}' ({exc.strerror}); "
                      f"set options.cache_dir to a writable folder")
    return x


def check_backbone(task: str, arch: str, weights: str | None) -> tuple[str, str | None]:
    """Validate the ``arch`` and ``weights`` options (a known arch; an existing local file)."""
    from xbench.networks import ARCHS

    if arch not in ARCHS:
        raise ConfigError(f"task '{task}': unknown arch '{arch}'; choose one of {', '.join(ARCHS)}")
    if weights is not None and not Path(weights).expanduser().is_file():
        raise ConfigError(f"task '{task}': weights file '{weights}' does not exist; give the "
                          f"path of a local torchvision ResNet checkpoint (nothing is downloaded)")
    return arch, weights


def _domain_seed(data_seed: int, domain: str) -> int:
    return (data_seed * 1_000_003 + zlib.crc32(domain.encode())) % 2**63


class ImageDiskTask(Task):
    """Shared behaviour of tasks read from disk: options, cache folder, ImageNet normalisation."""

    kind = "cross_domain"
    protocols = ("dg", "uda")
    location_options = ("root", "cache_dir")
    #: DomainBed's defaults: 5,000 steps, 32 images per domain, a checkpoint every 300.
    budget = Budget(steps=5000, batch_size=32, eval_every=300, eval_batch_size=128)
    info_: DatasetInfo | None = None

    def backbone(self) -> dict[str, Any]:
        """The ``arch`` and ``weights`` options, for ``networks.featurizer``."""
        return {"arch": self.arch, "weights": self.weights}

    def cache_path(self) -> Path:
        """Where decoded images are cached."""
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 -> float in [0, 1], then ImageNet mean/std normalisation when ``normalize``."""
        x = super().prepare(x)
        if not self.normalize:
            return x
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @abc.abstractmethod
    def data_files(self) -> list[tuple[str, Path]]:
        """Every file the task reads, as ``(name relative to root, path)``."""

    def fingerprint(self) -> str | None:
        """The content fingerprint of the data under ``root`` (see
        :func:`content_fingerprint`); ``None`` without a ``root``."""
        if not self.root:
            return None
        where = hashlib.sha256(os.path.abspath(self._root()).encode()).hexdigest()[:16]
        cache = self.cache_path() / "fingerprints" / f"{self.registered_name}-{where}.json"
        return content_fingerprint(self.data_files(), cache)

    def _root(self) -> Path:
        name = self.registered_name
        if not self.root:
            where = self.info_.folder if self.info_ else "DATASET"
            raise ConfigError(f"task '{name}' needs its data folder: set options = {{ root = "
                              f"\"data/{where}\" }} in the suite (see `xbench data info {name}`)")
        return Path(self.root).expanduser()


@register_task("folder", tags={"disk", "images"})
class FolderTask(ImageDiskTask):
    """Any image dataset laid out as ``root/<domain>/<class>/<image>`` (the DomainBed layout).

    Domains are ``root``'s sub-folders (or the ``domains`` option), classes
    the union of their sub-folders, sorted (as torchvision's ImageFolder
    does). Images are resized to ``resolution`` squared, cached as uint8, and
    each domain is split 70/10/20 into train/val/test. ``arch`` and
    ``weights`` (a local ImageNet checkpoint) name the backbone the task asks for.
    """

    version = "1"

    def __init__(self, *, data_seed: int = 0, root: str | None = None, resolution: int = 224,
                 domains: tuple[str, ...] = (), cache_dir: str | None = None,
                 normalize: bool = True, arch: str = "auto", weights: str | None = None):
        super().__init__(data_seed=data_seed)
        self.root = root
        self.resolution = int(resolution)
        self.cache_dir = cache_dir
        self.normalize = bool(normalize)
        self.domains_ = self._resolve_domains(tuple(str(d) for d in domains))
        self.classes = self._resolve_classes()
        self.arch, self.weights = check_backbone(self.registered_name, arch, weights)

    # -- layout ---------------------------------------------------------------
    def _resolve_domains(self, wanted: tuple[str, ...]) -> tuple[str, ...]:
        known = self.info_.domains if self.info_ else ()
        if self.root is None:
            return wanted or known
        root = self._root()
        if not root.is_dir():
            raise ConfigError(f"task '{self.registered_name}': data folder '{root}' does not "
                              f"exist; download the data (see `xbench data info "
                              f"{self.registered_name}`) and set options.root to its folder")
        on_disk = known or tuple(d for d in subfolders(root))
        for name in wanted:
            if name not in on_disk:
                raise ConfigError(f"task '{self.registered_name}': no domain '{name}'; its "
                                  f"domains are: {', '.join(on_disk) or '(none found)'}")
        chosen = wanted or on_disk
        if not chosen:
            raise ConfigError(f"task '{self.registered_name}': '{root}' has no domain folders; "
                              f"expected {root}/<domain>/<class>/<image>")
        missing = [name for name in chosen if not (root / name).is_dir()]
        if missing:
            raise ConfigError(f"task '{self.registered_name}': domain folder(s) "
                              f"{', '.join(missing)} missing under '{root}'; run `xbench data "
                              f"check {self.registered_name} --root {root}` to see what is there")
        return chosen

    def _resolve_classes(self) -> tuple[str, ...]:
        if self.info_:
            return tuple(sorted(self.info_.classes))
        if self.root is None:
            return ()
        root = self._root()
        names = sorted({c for d in self.domains_ for c in subfolders(root / d)})
        if not names:
            raise ConfigError(f"task '{self.registered_name}': no class folders under "
                              f"'{root}/<domain>/'; expected {root}/<domain>/<class>/<image>")
        return tuple(names)

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        return len(self.classes)

    @property
    def domains(self) -> tuple[str, ...]:
        return self.domains_

    @property
    def default_target(self) -> tuple[str, ...]:
        if self.info_ and self.info_.default_target in self.domains:
            return (self.info_.default_target,)
        return (self.domains[-1],) if self.domains else ()

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (3, self.resolution, self.resolution)

    def files(self, domain: str) -> tuple[Path, list[str], torch.Tensor]:
        """The domain's folder, its image files (relative, sorted by class) and their labels."""
        root = self._root()
        base = domain_dir(root, domain, self.info_.inner if self.info_ else "")
        present = subfolders(base)
        unexpected = [c for c in present if c not in self.classes]
        if unexpected:
            shown = ", ".join(self.classes[:12]) + (", ..." if len(self.classes) > 12 else "")
            raise ConfigError(f"task '{self.registered_name}': '{base}' has class folder(s) "
                              f"{unexpected[:5]} the dataset does not have; expected: {shown}")
        missing = [c for c in self.classes if c not in present]
        if missing:
            warnings.warn(f"task '{self.registered_name}': domain '{domain}' lacks class "
                          f"folder(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        files, labels = [], []
        for label, name in enumerate(self.classes):
            if name in present:
                found = class_images(base / name)
                files += [os.path.join(name, f) for f in found]
                labels += [label] * len(found)
        if not files:
            raise ConfigError(f"task '{self.registered_name}': no images under '{base}' "
                              f"(extensions {', '.join(IMAGE_EXTENSIONS)})")
        return base, files, torch.tensor(labels, dtype=torch.long)

    def data_files(self) -> list[tuple[str, Path]]:
        """The images of the task's domains and classes, as ``domain/class/file``; what
        :meth:`files` would refuse (a class folder the dataset lacks) counts too."""
        root = self._root()
        found = []
        for domain in self.domains:
            base = domain_dir(root, domain, self.info_.inner if self.info_ else "")
            if not base.is_dir():
                continue
            for name in subfolders(base):
                found += [(f"{domain}/{name}/{f}", base / name / f)
                          for f in class_images(base / name)]
        return found

    def build(self) -> dict[str, dict[str, Split]]:
        data = {}
        for domain in self.domains:
            base, files, y = self.files(domain)
            x = load_images(base, files, self.resolution, self.cache_path(),
                            f"{self.registered_name}-{domain}")
            generator = torch.Generator().manual_seed(_domain_seed(self.data_seed, domain))
            parts = split_indices(len(files), FRACTIONS, generator)
            empty = [s for s, idx in zip(("train", "val", "test"), parts) if len(idx) == 0]
            if empty:
                raise ConfigError(f"task '{self.registered_name}': domain '{domain}' has only "
                                  f"{len(files)} image(s), too few to split into train, val "
                                  f"and test ({', '.join(empty)} would be empty); it needs at "
                                  f"least 10")
            data[domain] = {s: Split(x[idx], y[idx]) for s, idx in
                            zip(("train", "val", "test"), parts)}
        return data


def _preset_doc(info: DatasetInfo) -> str:
    return (f"{info.title} from disk: {info.citation}\n\n"
            f"    Layout ``root/<domain>/<class>/<image>`` with domains "
            f"{', '.join(info.domains)} and {len(info.classes)} classes; default target "
            f"``{info.default_target}``. Published at {info.url}. Otherwise as ``folder``.\n")


for _info in PRESETS.values():
    _cls = type(f"{_info.name.capitalize()}Task", (FolderTask,),
                {"info_": _info, "__doc__": _preset_doc(_info), "__module__": __name__})
    globals()[_cls.__name__] = register_task(_info.name, tags={"disk", "images", "preset"})(_cls)


@register_task("digits_mnist_usps_svhn", tags={"disk", "digits"})
class DigitsFromDisk(ImageDiskTask):
    """MNIST, USPS and SVHN (the digit-adaptation benchmarks of Ganin & Lempitsky, 2015).

    Read with torchvision's own readers (``download=False``) from ``root``
    holding the files torchvision downloads (see ``xbench data info
    digits_mnist_usps_svhn``); all resized to ``resolution`` (32) in 3
    channels. Each official training set is split 90/10 into train/val, the
    official test set is the test split. Default target ``mnist``.
    """

    version = "1"
    num_classes = 10
    budget = Budget(steps=3000, batch_size=64, eval_every=500)
    info_ = DIGITS

    def __init__(self, *, data_seed: int = 0, root: str | None = None, resolution: int = 32,
                 domains: tuple[str, ...] = DIGITS.domains, normalize: bool = False,
                 arch: str = "auto", weights: str | None = None):
        super().__init__(data_seed=data_seed)
        self.root = root
        self.resolution = int(resolution)
        self.domains_ = tuple(str(d) for d in domains)
        self.normalize = bool(normalize)
        self.arch, self.weights = check_backbone(self.registered_name, arch, weights)
        self.cache_dir = None
        for name in self.domains_:
            if name not in DIGITS.domains:
                raise ConfigError(f"task 'digits_mnist_usps_svhn': no domain '{name}'; "
                                  f"choose from {', '.join(DIGITS.domains)}")
        if root is not None and not Path(root).expanduser().is_dir():
            raise ConfigError(f"task 'digits_mnist_usps_svhn': data folder '{root}' does not "
                              f"exist; see `xbench data info digits_mnist_usps_svhn`")

    @property
    def domains(self) -> tuple[str, ...]:
        return self.domains_

    def data_files(self) -> list[tuple[str, Path]]:
        """The files torchvision reads for the chosen domains (those present)."""
        root = self._root()
        names = {"mnist": [f"MNIST/raw/{p}-{k}-ubyte" for p in ("train", "t10k")
                           for k in ("images-idx3", "labels-idx1")],
                 "usps": ["usps.bz2", "usps.t.bz2"],
                 "svhn": ["train_32x32.mat", "test_32x32.mat"]}
        return [(rel, root / rel) for d in self.domains for rel in names[d]
                if (root / rel).is_file()]

    @property
    def default_target(self) -> tuple[str, ...]:
        return ("mnist",) if "mnist" in self.domains else (self.domains[-1],)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (3, self.resolution, self.resolution)

    def build(self) -> dict[str, dict[str, Split]]:
        root = self._root()
        data = {}
        for domain in self.domains:
            (x_train, y_train), (x_test, y_test) = (read_digits(domain, root, train)
                                                    for train in (True, False))
            x_train, x_test = (_to_rgb(x, self.resolution) for x in (x_train, x_test))
            generator = torch.Generator().manual_seed(_domain_seed(self.data_seed, domain))
            order = torch.randperm(len(x_train), generator=generator)
            n_val = int(round(0.1 * len(order)))
            val, train = order[:n_val], order[n_val:]
            data[domain] = {"train": Split(x_train[train], y_train[train]),
                            "val": Split(x_train[val], y_train[val]),
                            "test": Split(x_test, y_test)}
        return data


def read_digits(domain: str, root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One split of MNIST, USPS or SVHN through torchvision (no download): uint8 images, labels."""
    from torchvision import datasets

    try:
        if domain == "mnist":
            ds = datasets.MNIST(str(root), train=train, download=False)
            return ds.data.unsqueeze(1), ds.targets.long()
        if domain == "usps":
            ds = datasets.USPS(str(root), train=train, download=False)
            return torch.from_numpy(ds.data).unsqueeze(1), torch.tensor(ds.targets).long()
        ds = datasets.SVHN(str(root), split="train" if train else "test", download=False)
        return torch.from_numpy(ds.data), torch.from_numpy(ds.labels).long()
    except (RuntimeError, OSError) as exc:
        expected = {"mnist": "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte",
                    "usps": "usps.bz2 and usps.t.bz2",
                    "svhn": "train_32x32.mat and test_32x32.mat (checked by MD5)"}[domain]
        raise ConfigError(f"task 'digits_mnist_usps_svhn': cannot read {domain} under '{root}' "
                          f"({type(exc).__name__}); put {expected} there (see `xbench data "
                          f"info digits_mnist_usps_svhn`)") from None


def _to_rgb(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 (N, 1|3, H, W) -> uint8 (N, 3, R, R), resized with antialiasing."""
    import torch.nn.functional as F

    out = torch.empty(len(x), 3, resolution, resolution, dtype=torch.uint8)
    for start in range(0, len(x), 4096):
        chunk = x[start:start + 4096].float()
        if chunk.shape[-1] != resolution or chunk.shape[-2] != resolution:
            chunk = F.interpolate(chunk, size=(resolution, resolution), mode="bilinear",
                                  antialias=True, align_corners=False)
        out[start:start + 4096] = chunk.expand(-1, 3, -1, -1).round().clamp(0, 255).to(
            torch.uint8)
    return out
