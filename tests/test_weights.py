"""Downloading the weights against a local HTTP server that plays Zenodo's records API.

The server records every request; each test checks that exactly the expected requests arrived.
"""
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hyperadapt.models.errors import HyperAdaptError, JobCancelled
from hyperadapt.models.network import weights
from hyperadapt.models.network.weights import (download_weights, find_cached_weights,
                                               weights_cache_dir)

NAME = "SpectralGPT+.pth"
RECORD_PATH = "/api/records/8412455"
FILE_PATH = f"/api/records/8412455/files/{NAME}/content"
CONTENT = bytes(range(256)) * 4096 + b"tail"       # about 1 MB, not a multiple of the chunk size


class FakeZenodo:
    """A records API with one file; can drop a connection mid-file or publish a wrong checksum."""

    def __init__(self, content=CONTENT, drops=0, checksum=None):
        self.content = content
        self.drops = drops
        self.checksum = checksum or "md5:" + hashlib.md5(content).hexdigest()
        self.requests = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                fake.requests.append((self.path, self.headers.get("Range")))
                if self.path == RECORD_PATH:
                    fake.send_record(self)
                elif self.path == FILE_PATH:
                    fake.send_file(self)
                else:
                    self.send_error(404)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def api_url(self):
        return self.base_url + RECORD_PATH

    def send_record(self, handler):
        body = json.dumps({"id": 8412455, "files": [
            {"key": "SpectralGPT.pth", "size": 10, "checksum": "md5:" + "0" * 32,
             "links": {"self": self.base_url + "/api/records/8412455/files/SpectralGPT.pth/content"}},
            {"key": NAME, "size": len(self.content), "checksum": self.checksum,
             "links": {"self": self.base_url + FILE_PATH}},
        ]}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def send_file(self, handler):
        start = 0
        requested = handler.headers.get("Range")
        if requested:
            start = int(requested.removeprefix("bytes=").rstrip("-"))
            handler.send_response(206)
            handler.send_header("Content-Range",
                                f"bytes {start}-{len(self.content) - 1}/{len(self.content)}")
        else:
            handler.send_response(200)
        body = self.content[start:]
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if self.drops:
            self.drops -= 1
            handler.wfile.write(body[:len(body) // 3])
            handler.wfile.flush()
            handler.close_connection = True
            return
        handler.wfile.write(body)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERADAPT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "weights"


def test_cache_dir_follows_the_environment(private_cache):
    assert weights_cache_dir() == private_cache
    assert find_cached_weights(NAME) is None


def test_complete_download_reports_progress_and_lands_in_the_cache(private_cache):
    reports = []
    with FakeZenodo() as server:
        path = download_weights(NAME, api_url=server.api_url,
                                progress=lambda f, m: reports.append((f, m)))
    assert path == private_cache / NAME
    assert path.read_bytes() == CONTENT
    assert not (private_cache / f"{NAME}.part").exists()
    assert server.requests == [(RECORD_PATH, None), (FILE_PATH, None)]
    assert reports[-1] == (1.0, f"Downloaded {NAME}")
    assert find_cached_weights(NAME) == path


def test_a_cached_file_is_not_downloaded_again(private_cache):
    private_cache.mkdir(parents=True)
    (private_cache / NAME).write_bytes(CONTENT)
    with FakeZenodo() as server:
        assert download_weights(NAME, api_url=server.api_url) == private_cache / NAME
    assert server.requests == []


def test_interrupted_download_resumes_with_a_range_request(tmp_path):
    dest = tmp_path / "weights"
    with FakeZenodo(drops=1) as server:
        with pytest.raises(HyperAdaptError, match="stopped after .* starting it again resumes it"):
            download_weights(NAME, api_url=server.api_url, dest_dir=dest, max_attempts=1)
        part = dest / f"{NAME}.part"
        assert not (dest / NAME).exists()
        received = part.stat().st_size
        assert 0 < received < len(CONTENT)
        path = download_weights(NAME, api_url=server.api_url, dest_dir=dest)
    assert path.read_bytes() == CONTENT
    assert not part.exists()
    assert server.requests == [(RECORD_PATH, None), (FILE_PATH, None),
                               (RECORD_PATH, None), (FILE_PATH, f"bytes={received}-")]


def test_one_call_retries_a_dropped_connection_by_itself(tmp_path):
    with FakeZenodo(drops=1) as server:
        path = download_weights(NAME, api_url=server.api_url, dest_dir=tmp_path)
    assert path.read_bytes() == CONTENT
    assert [request[0] for request in server.requests] == [RECORD_PATH, FILE_PATH, FILE_PATH]
    assert server.requests[1][1] is None
    assert server.requests[2][1] == f"bytes={len(CONTENT) // 3}-"


def test_corrupted_download_is_deleted(tmp_path):
    with FakeZenodo(checksum="md5:" + hashlib.md5(b"other").hexdigest()) as server:
        with pytest.raises(HyperAdaptError, match="does not match its published md5 checksum"):
            download_weights(NAME, api_url=server.api_url, dest_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert server.requests == [(RECORD_PATH, None), (FILE_PATH, None)]


def test_cancel_keeps_only_the_partial_file(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "CHUNK_BYTES", 64 * 1024)
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 3

    with FakeZenodo() as server:
        with pytest.raises(JobCancelled, match="cancelled"):
            download_weights(NAME, api_url=server.api_url, dest_dir=tmp_path, cancel=cancel)
    assert [p.name for p in tmp_path.iterdir()] == [f"{NAME}.part"]
    assert (tmp_path / f"{NAME}.part").stat().st_size == 3 * 64 * 1024
    assert server.requests == [(RECORD_PATH, None), (FILE_PATH, None)]


def test_unknown_file_and_unreachable_server_are_clear_errors(tmp_path):
    with FakeZenodo() as server:
        with pytest.raises(HyperAdaptError, match="has no file named Other.pth .*SpectralGPT\\+.pth"):
            download_weights("Other.pth", api_url=server.api_url, dest_dir=tmp_path)
        url = server.api_url
    assert server.requests == [(RECORD_PATH, None)]
    with pytest.raises(HyperAdaptError, match="Could not reach 127.0.0.1"):
        download_weights(NAME, api_url=url, dest_dir=tmp_path)
    assert not (tmp_path / NAME).exists()
