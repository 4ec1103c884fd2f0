"""Downloads on local bytes: a fake opener stands in for the network (nothing here goes out)."""

import hashlib
import io
import tarfile
import urllib.error
import zipfile

import pytest

from n2n_core.data import download as D
from n2n_core.data import fixtures as F
from n2n_core.data import load_samples


class FakeServer:
    """Serves one payload; honours Range; can drop the connection after ``fail_after`` bytes."""

    def __init__(self, payload, fail_after=None, honour_range=True):
        self.payload, self.fail_after, self.honour_range = payload, fail_after, honour_range
        self.ranges = []

    def __call__(self, req):
        rng = req.get_header("Range")
        self.ranges.append(rng)
        start = int(rng.split("=")[1].rstrip("-")) if rng and self.honour_range else 0
        body = self.payload[start:]
        limit, self.fail_after = self.fail_after, None  # fail once

        class Resp:
            status = 206 if start else 200
            headers = {"Content-Length": str(len(body))}  # noqa: RUF012 (one response)
            _b, _sent = io.BytesIO(body), 0

            def read(self, n):
                if limit is not None and self._sent >= limit:
                    raise ConnectionResetError("connection dropped")
                data = self._b.read(n if limit is None else min(n, limit - self._sent))
                self._sent += len(data)
                return data

        return Resp()


def _sha(b):
    return hashlib.sha256(b).hexdigest()


def test_fetch_resumes_a_partial_download(tmp_path):
    payload = bytes(range(256)) * 4000
    server = FakeServer(payload, fail_after=300_000)
    dest = tmp_path / "a.bin"
    with pytest.raises(ConnectionResetError):
        D.fetch("https://example.org/a.bin", dest, _sha(payload), server, chunk=65536)
    part = tmp_path / "a.bin.part"
    assert part.stat().st_size == 300_000 and not dest.exists()
    D.fetch("https://example.org/a.bin", dest, _sha(payload), server, chunk=65536)
    assert dest.read_bytes() == payload and not part.exists()
    assert server.ranges == [None, "bytes=300000-"]
    D.fetch("https://example.org/a.bin", dest, _sha(payload), server)  # verified: not fetched again
    assert len(server.ranges) == 2


def test_fetch_restarts_when_the_server_ignores_range(tmp_path):
    payload = b"x" * 1000
    server = FakeServer(payload, honour_range=False)
    (tmp_path / "a.bin.part").write_bytes(b"garbage")
    D.fetch("https://example.org/a.bin", tmp_path / "a.bin", _sha(payload), server)
    assert (tmp_path / "a.bin").read_bytes() == payload


def test_checksum_mismatch_removes_the_partial_file(tmp_path):
    with pytest.raises(D.DownloadError, match=r"checksum mismatch.*expected SHA-256 0000"):
        D.fetch("https://example.org/a.bin", tmp_path / "a.bin", "0" * 64, FakeServer(b"payload"))
    assert not (tmp_path / "a.bin.part").exists() and not (tmp_path / "a.bin").exists()


def _mvtec_archive(tmp_path, fmt):
    src = F.write_mvtec(
        tmp_path / "src", categories=D.MVTEC_CATEGORIES, n_train=1, n_test=1, size=8
    )
    buf = io.BytesIO()
    if fmt == "zip":
        with zipfile.ZipFile(buf, "w") as z:
            for p in sorted(src.rglob("*")):
                z.write(p, p.relative_to(src).as_posix())
    else:
        with tarfile.open(fileobj=buf, mode=f"w:{fmt}") as t:
            for c in sorted(src.iterdir()):
                t.add(c, arcname=c.name)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["xz", "gz", "zip"])
def test_download_extracts_and_checks_the_layout(tmp_path, monkeypatch, fmt):
    payload = _mvtec_archive(tmp_path, fmt)
    archive = D.Archive("https://example.org/mvtec.archive", "mvtec.archive", _sha(payload))
    monkeypatch.setitem(D.DATASETS, "mvtec", D.DatasetInfo("mvtec", (archive,), "mvtec", "test"))
    root = tmp_path / "data"
    out = D.download("mvtec", root, opener=FakeServer(payload))
    assert out == root / "mvtec" and D.check_layout("mvtec", root) == []
    assert not (root / "downloads").exists()  # archive removed after a good unpack
    assert len(load_samples("mvtec", out, "zipper", "test")) == 3
    # a second call finds the data in place and fetches nothing
    assert D.download("mvtec", root, opener=lambda req: pytest.fail("fetched again")) == out


def test_offline_message_says_what_to_do(tmp_path):
    def offline(req):
        raise urllib.error.URLError("Temporary failure in name resolution")

    with pytest.raises(D.DownloadError) as err:
        D.download("visa", tmp_path / "data", opener=offline)
    msg = str(err.value)
    assert "could not download https://amazon-visual-anomaly" in msg
    assert "2eb8690c803ab37de0324772964100169ec8ba1fa3f7e94291c9ca673f40f362" in msg
    assert f"unpack it into {tmp_path / 'data' / 'visa'}" in msg


def test_wrong_layout_after_unpacking(tmp_path, monkeypatch):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("something/else.txt", "hello")
    payload = buf.getvalue()
    archive = D.Archive("https://example.org/Class1.zip", "Class1.zip", None)
    monkeypatch.setitem(D.DATASETS, "dagm", D.DatasetInfo("dagm", (archive,), "dagm", "test"))
    with pytest.raises(D.DownloadError, match=r"layout is not the expected one: missing .*Class1"):
        D.download("dagm", tmp_path / "data", opener=FakeServer(payload))


def test_dagm_layout_check_on_fixture(tmp_path):
    F.write_dagm(tmp_path / "dagm", classes=tuple(range(1, 11)), n_normal=1, n_defective=1, size=8)
    assert D.check_layout("dagm", tmp_path) == []


def test_extract_refuses_path_traversal(tmp_path):
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as t:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 2
        t.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(D.DownloadError, match="would unpack outside"):
        D.extract(evil, tmp_path / "into")
    assert not (tmp_path / "outside.txt").exists()


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(ValueError, match="dataset must be one of"):
        D.download("imagenet", tmp_path)


# ------------------------------------------------------------------ nothing stuck, nothing unsafe
def _zip_bytes():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("Class1/Train/0001.PNG", b"\x89PNG" + bytes(2000))
    return buf.getvalue()


def test_a_complete_part_answered_by_416_is_finished_not_stuck(tmp_path):
    payload = _zip_bytes()
    (tmp_path / "a.zip.part").write_bytes(payload)  # every byte, the rename never happened

    def refuse(req):
        assert req.get_header("Range") == f"bytes={len(payload)}-"
        raise urllib.error.HTTPError(req.full_url, 416, "Range Not Satisfiable", {}, None)

    D.fetch("https://example.org/a.zip", tmp_path / "a.zip", _sha(payload), refuse)
    assert (tmp_path / "a.zip").read_bytes() == payload


def test_a_file_without_checksum_cut_short_is_never_kept_as_final(tmp_path):
    """DAGM's archives have no published checksum: the announced size and a whole archive
    decide, and a truncated final file from an older run is fetched again."""
    payload = _zip_bytes()

    class Short(FakeServer):
        def __call__(self, req):
            resp = super().__call__(req)
            resp.headers = {"Content-Length": str(len(payload))}
            data = resp.read(len(payload))[:-100]  # the connection closes early, no error
            resp._b, resp._sent = io.BytesIO(data), 0
            return resp

    with pytest.raises(D.DownloadError, match=r"ended after \d+ of \d+ bytes"):
        D.fetch("https://example.org/c.zip", tmp_path / "c.zip", None, Short(payload))
    assert not (tmp_path / "c.zip").exists()  # kept as .part, to resume
    (tmp_path / "old.zip").write_bytes(payload[:-100])  # final but cut short (older n2n)
    server = FakeServer(payload)
    D.fetch("https://example.org/old.zip", tmp_path / "old.zip", None, server)
    assert (tmp_path / "old.zip").read_bytes() == payload and server.ranges == [None]


def test_the_default_opener_has_a_timeout(monkeypatch):
    seen = {}
    monkeypatch.setattr(
        D.urllib.request, "urlopen", lambda req, timeout=None: seen.update(t=timeout)
    )
    D._open(D.urllib.request.Request("https://example.org/x"))
    assert seen["t"] == D.TIMEOUT_S > 0


def _linked_tar(path):
    """A symlink chain: ``a -> .``, ``a/b -> ..``, then a file through ``a/b``."""
    with tarfile.open(path, "w") as t:
        for name, target in (("a", "."), ("a/b", "..")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            t.addfile(info)
        info = tarfile.TarInfo("a/b/escaped.txt")
        info.size = 2
        t.addfile(info, io.BytesIO(b"hi"))


@pytest.mark.parametrize("has_filter", [True, False])
def test_a_chain_of_links_never_writes_outside(tmp_path, monkeypatch, has_filter):
    """On every supported Python: with tarfile's data filter (its error wrapped as a
    DownloadError) and without it (Python 3.10.0-3.10.11, 3.11.0-3.11.3: links refused)."""
    if not has_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    elif not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python has no tarfile.data_filter")
    _linked_tar(tmp_path / "evil.tar")
    with pytest.raises(D.DownloadError):
        D.extract(tmp_path / "evil.tar", tmp_path / "deep" / "into")
    assert not list(tmp_path.rglob("escaped.txt"))
