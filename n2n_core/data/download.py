"""Dataset downloads: official URLs, resumable transfer, SHA-256 check, safe extraction and a
layout check. Offline or on a checksum mismatch the error says which URL to fetch by hand,
which checksum to expect and the exact folder to unpack into.

``python -m n2n_core download {mvtec,visa,dagm,dtd} --root data``
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from n2n_core.data.samples import DatasetError

__all__ = [
    "DATASETS", "Archive", "DownloadError", "check_layout", "download", "dtd_images", "extract",
    "fetch",
]  # fmt: skip


class DownloadError(RuntimeError):
    """A download or its check failed; the message says how to finish by hand."""


@dataclass(frozen=True)
class Archive:
    url: str
    filename: str
    sha256: str | None  # None: the publisher gives no checksum; the layout check decides


@dataclass(frozen=True)
class DatasetInfo:
    folder: str  # under --root: where the dataset lives once unpacked
    archives: tuple[Archive, ...]
    extract_into: str  # relative to --root: where each archive is unpacked
    licence: str


_ZENODO_DAGM = "https://zenodo.org/records/8086136/files/Class{}.zip"
DATASETS: dict[str, DatasetInfo] = {
    "mvtec": DatasetInfo(
        "mvtec",
        (Archive("https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/"
                 "420938113-1629952094/mvtec_anomaly_detection.tar.xz",
                 "mvtec_anomaly_detection.tar.xz",
                 "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d"),),
        "mvtec", "CC BY-NC-SA 4.0 (MVTec Software GmbH)"),
    "visa": DatasetInfo(
        "visa",
        (Archive("https://amazon-visual-anomaly.s3.us-west-2.amazonaws.com/VisA_20220922.tar",
                 "VisA_20220922.tar",
                 "2eb8690c803ab37de0324772964100169ec8ba1fa3f7e94291c9ca673f40f362"),),
        "visa", "CC BY 4.0 (Amazon)"),
    "dagm": DatasetInfo(
        "dagm",
        tuple(Archive(_ZENODO_DAGM.format(i), f"Class{i}.zip", None) for i in range(1, 11)),
        "dagm", "DAGM 2007 competition data, research use (HCI Heidelberg; Zenodo mirror)"),
    "dtd": DatasetInfo(
        "dtd",
        (Archive("https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
                 "dtd-r1.0.1.tar.gz",
                 "e42855a52a4950a3b59612834602aa253914755c95b0cff9ead6d07395f8e205"),),
        ".", "research use (Oxford VGG)"),
}  # fmt: skip

MVTEC_CATEGORIES = ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather",
                    "metal_nut", "pill", "screw", "tile", "toothbrush", "transistor", "wood",
                    "zipper")  # fmt: skip
VISA_CATEGORIES = ("candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1",
                   "macaroni2", "pcb1", "pcb2", "pcb3", "pcb4", "pipe_fryum")  # fmt: skip

Opener = Callable[[urllib.request.Request], object]
TIMEOUT_S = 60  # a stalled server fails after this long without a byte, never hangs


def _open(req: urllib.request.Request) -> object:
    return urllib.request.urlopen(req, timeout=TIMEOUT_S)


def _is_archive(path: Path) -> bool:
    """Whether ``path`` reads as a whole zip or tar (a file cut short does not)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                z.infolist()
            return True
        with tarfile.open(path) as t:
            t.getmembers()  # reads to the end: a truncated tar fails here
        return True
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError):
        return False


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _by_hand(name: str, archive: Archive, root: Path) -> str:
    info = DATASETS[name]
    check = f" (SHA-256 {archive.sha256})" if archive.sha256 else ""
    return (f"Download {archive.url}{check} by hand, unpack it into {root / info.extract_into} "
            f"(so that {root / info.folder} holds the dataset), then run again with --root {root}.")  # fmt: skip


def fetch(
    url: str,
    dest: Path,
    sha256: str | None = None,
    opener: Opener = _open,
    chunk: int = 1 << 20,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a partial file with an HTTP
    Range request, then check the SHA-256 (where the publisher gives none: the byte count the
    server announced and that the archive reads whole). A finished, verified ``dest`` is not
    fetched again; one that fails the check is fetched anew."""
    if dest.is_file():
        if sha256 is not None and _sha256(dest) == sha256:
            return dest
        if sha256 is None and _is_archive(dest):
            return dest
        dest.unlink()  # cut short or corrupt: never kept as final
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    try:
        total = _receive(url, part, have, opener, chunk, dest.name)
    except urllib.error.HTTPError as exc:
        if not (have and exc.code == 416):  # 416: the part already holds every byte
            raise
        total = have
    got_size = part.stat().st_size
    if total is not None and got_size != total:
        raise DownloadError(
            f"{url} ended after {got_size} of {total} bytes; run again to resume from {part}"
        )
    if sha256 is not None:
        got = _sha256(part)
        if got != sha256:
            part.unlink()
            raise DownloadError(f"checksum mismatch for {url}: expected SHA-256 {sha256}, got {got}")
    elif not _is_archive(part):
        part.unlink()
        raise DownloadError(f"{url} did not give a readable archive (removed); run again")
    part.replace(dest)
    return dest


def _receive(
    url: str, part: Path, have: int, opener: Opener, chunk: int, name: str
) -> int | None:
    """Append the rest of ``url`` from byte ``have`` to ``part``; the expected total size."""
    from tqdm.auto import tqdm

    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    resp = opener(req)
    if have and getattr(resp, "status", 200) != 206:  # the server ignored the range: start over
        have = 0
    total = resp.headers.get("Content-Length")
    total = int(total) + have if total is not None else None
    with part.open("ab" if have else "wb") as f, tqdm(
        total=total, initial=have, unit="B", unit_scale=True, desc=name
    ) as bar:  # fmt: skip
        while block := resp.read(chunk):
            f.write(block)
            bar.update(len(block))
    return total


def extract(archive: Path, into: Path) -> None:
    """Unpack a .tar[.gz|.xz] or .zip into ``into``, refusing members that would land outside."""
    into.mkdir(parents=True, exist_ok=True)
    base = into.resolve()

    def safe(name: str) -> None:
        if not (base / name).resolve().is_relative_to(base):
            raise DownloadError(f"{archive} contains {name!r}, which would unpack outside {into}")

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                safe(name)
            z.extractall(into)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            members = t.getmembers()
            for m in members:
                safe(m.name)
                if m.issym() or m.islnk():
                    safe(str(Path(m.name).parent / m.linkname))
            _extract_tar(t, members, into, archive)
    else:
        raise DownloadError(f"{archive} is neither a tar nor a zip archive")


def _extract_tar(t: tarfile.TarFile, members: list, into: Path, archive: Path) -> None:
    """With Python's ``data`` filter where it exists (3.12, 3.11.4+, 3.10.12+); without it, no
    link or special file at all (datasets hold none), so that a chain of links cannot write
    outside ``into``."""
    if hasattr(tarfile, "data_filter"):
        try:
            t.extractall(into, members=members, filter="data")
        except tarfile.TarError as exc:  # FilterError and co.
            raise DownloadError(f"{archive}: refused to unpack ({exc})") from None
        return
    odd = [m.name for m in members if not (m.isfile() or m.isdir())]
    if odd:
        raise DownloadError(
            f"{archive} contains links or special files ({', '.join(odd[:3])}), which this "
            "Python cannot unpack safely: use Python ≥ 3.11.4, or unpack it by hand"
        )
    t.extractall(into, members=members)


def check_layout(name: str, root: Path) -> list[str]:
    """Problems with ``root/<folder>`` for dataset ``name`` (empty list: the layout is right)."""
    d = root / DATASETS[name].folder
    if not d.is_dir():
        return [f"{d} does not exist"]
    need: list[Path] = []
    if name == "mvtec":
        need = [d / c / sub for c in MVTEC_CATEGORIES for sub in ("train/good", "test", "ground_truth")]
    elif name == "visa":
        need = [d / "split_csv" / "1cls.csv"] + [d / c / "Data" / "Images" for c in VISA_CATEGORIES]
    elif name == "dagm":
        need = [d / f"Class{i}" / p / "Label" / "Labels.txt" for i in range(1, 11) for p in ("Train", "Test")]
    elif name == "dtd":
        need = [d / "images"]
    return [f"missing {p}" for p in need if not p.exists()]


def download(
    name: str,
    root: Path | str = "data",
    opener: Opener = _open,
    keep_archives: bool = False,
) -> Path:
    """Fetch, verify, unpack and check one dataset; returns ``root/<folder>``."""
    if name not in DATASETS:
        raise DatasetError(f"dataset must be one of {sorted(DATASETS)}, got {name!r}")
    root = Path(root)
    info = DATASETS[name]
    if not check_layout(name, root):
        print(f"[n2n] {name}: already in {root / info.folder}")
        return root / info.folder
    cache = root / "downloads"
    for archive in info.archives:
        try:
            path = fetch(archive.url, cache / archive.filename, archive.sha256, opener)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise DownloadError(f"could not download {archive.url} ({exc}). {_by_hand(name, archive, root)}") from None
        except DownloadError as exc:
            raise DownloadError(f"{exc}. {_by_hand(name, archive, root)}") from None
        print(f"[n2n] unpacking {path.name} into {root / info.extract_into}")
        extract(path, root / info.extract_into)
        if not keep_archives:
            path.unlink()
    problems = check_layout(name, root)
    if problems:
        shown = "; ".join(problems[:5]) + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else "")
        raise DownloadError(
            f"{name} was unpacked but its layout is not the expected one: {shown}. "
            f"See data/README.md for the layout the readers expect under {root / info.folder}."
        )
    if cache.is_dir() and not any(cache.iterdir()):
        shutil.rmtree(cache)
    print(f"[n2n] {name}: ready in {root / info.folder} (licence: {info.licence})")
    return root / info.folder


def dtd_images(datasets: Path | str) -> Path:
    """Where ``download("dtd", datasets)`` puts DTD's texture images: ``datasets/dtd/images``
    (the default texture folder of a dataset under the same ``datasets`` folder)."""
    return Path(datasets) / DATASETS["dtd"].folder / "images"
