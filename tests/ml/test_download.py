"""Downloads from a local HTTP server on 127.0.0.1: progress, checksums, mirrors, offline, cancel."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from playground.errors import BadFileError, OfflineError
from playground.ml.download import cached_download, download, file_matches
from playground.progress import Progress

CONTENT = bytes(range(256)) * 1200  # 300 KB: several chunks
MD5 = hashlib.md5(CONTENT).hexdigest()
SHA256 = hashlib.sha256(CONTENT).hexdigest()
DEAD = "http://127.0.0.1:9/"  # nothing listens on port 9


class _Server:
    """Serves ``files`` ({path: bytes}); ``/short`` promises more bytes than it sends. Counts requests."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.requests = files, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                if self.path == "/short":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(CONTENT)))
                    self.end_headers()
                    self.wfile.write(CONTENT[:1000])
                    return
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def _module_server():
    s = _Server({"/data.bin": CONTENT, "/other.bin": b"something else"})
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
def server(_module_server):
    """One server for the module (stopping one takes half a second), its request log fresh per test."""
    _module_server.requests.clear()
    return _module_server


def _drain(gen):
    progress = []
    try:
        while True:
            progress.append(next(gen))
    except StopIteration as stop:
        return stop.value, progress


def test_download_with_progress_and_checksums(server, tmp_path):
    dest = tmp_path / "sub" / "data.bin"
    result, progress = _drain(download(server.url + "/data.bin", dest, md5=MD5, sha256=SHA256))
    assert result == dest and dest.read_bytes() == CONTENT
    assert not dest.with_name("data.bin.part").exists()
    assert all(isinstance(p, Progress) for p in progress) and len(progress) >= 3
    fractions = [p.fraction for p in progress]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert progress[-1].text == "Downloading data.bin: 0.3 of 0.3 MB"


def test_a_bad_checksum_deletes_the_download(server, tmp_path):
    dest = tmp_path / "data.bin"
    with pytest.raises(BadFileError, match="data.bin .* is damaged: its sha256 checksum is wrong"):
        _drain(download(server.url + "/data.bin", dest, md5=MD5, sha256="0" * 64))
    assert list(tmp_path.iterdir()) == []


def test_a_short_download_leaves_nothing(server, tmp_path):
    with pytest.raises(Exception) as info:
        _drain(download(server.url + "/short", tmp_path / "data.bin"))
    assert not isinstance(info.value, BadFileError)
    assert list(tmp_path.iterdir()) == []


def test_cancelling_removes_the_part_file(server, tmp_path):
    dest = tmp_path / "data.bin"
    gen = download(server.url + "/data.bin", dest)
    next(gen)
    assert dest.with_name("data.bin.part").exists()
    gen.close()  # what the job pool does on cancel
    assert list(tmp_path.iterdir()) == []


def test_cached_download_uses_the_file_already_there(server, tmp_path):
    dest = tmp_path / "data.bin"
    dest.write_bytes(CONTENT)
    result, progress = _drain(cached_download([server.url + "/data.bin"], dest, md5=MD5))
    assert result == dest and progress == [] and server.requests == []
    # A file with the wrong content is fetched again.
    dest.write_bytes(b"stale")
    assert not file_matches(dest, md5=MD5)
    _drain(cached_download([server.url + "/data.bin"], dest, sha256=SHA256))
    assert dest.read_bytes() == CONTENT and server.requests == ["/data.bin"]


def test_cached_download_tries_mirrors_in_order(server, tmp_path):
    dest = tmp_path / "data.bin"
    urls = [DEAD + "data.bin", server.url + "/missing.bin", server.url + "/other.bin", server.url + "/data.bin"]
    result, _ = _drain(cached_download(urls, dest, md5=MD5))
    assert result == dest and dest.read_bytes() == CONTENT
    assert server.requests == ["/missing.bin", "/other.bin", "/data.bin"]


def test_every_mirror_unreachable_is_offline(tmp_path):
    urls = [f"http://127.0.0.1:9/{k}.bin" for k in range(4)]
    with pytest.raises(OfflineError) as info:
        _drain(cached_download(urls, tmp_path / "x.bin", md5=MD5, what="the test set", hint="Try later."))
    lines = str(info.value).splitlines()
    assert lines[0] == "Could not download the test set. Are you offline? Try later."
    assert len(lines) == 4 and all(line.startswith("http://127.0.0.1:9/") for line in lines[1:])
    assert not Path(tmp_path / "x.bin").exists()


def test_only_wrong_checksums_is_a_bad_file_not_offline(server, tmp_path):
    with pytest.raises(BadFileError, match="wrong checksum") as info:
        _drain(cached_download([DEAD + "a", server.url + "/other.bin"], tmp_path / "x.bin", md5=MD5))
    assert not isinstance(info.value, OfflineError)
    assert list(tmp_path.iterdir()) == []


def test_a_content_length_that_is_not_a_number_counts_as_unknown(tmp_path):
    import http.server
    import threading

    body = b"hello world" * 100

    class Odd(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server API
            self.send_response(200)
            self.send_header("Content-Length", "12abc")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Odd)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        gen = download(f"http://127.0.0.1:{httpd.server_address[1]}/f.bin", tmp_path / "f.bin")
        fractions = []
        try:
            while True:
                fractions.append(next(gen).fraction)
        except StopIteration as stop:
            path = stop.value
        assert path.read_bytes() == body and set(fractions) == {None}
    finally:
        httpd.shutdown()
