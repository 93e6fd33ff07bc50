"""`bertrt data`: downloads from a local HTTP server (no internet in tests), checked against a pinned SHA-256,
published atomically, a mismatch refused in one line with nothing written."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading

import pytest

from bertrt.cli import main
from bertrt.qa.download import FILES


@pytest.fixture()
def server(tmp_path):
    """A local HTTP server over tmp_path/www holding a small stand-in for dev-v2.0.json; yields (base URL, sha256)."""
    www = tmp_path / "www"
    www.mkdir()
    body = json.dumps({"version": "v2.0", "data": []}).encode() * 1000
    (www / "dev-v2.0.json").write_bytes(body)
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # the server's access log would go to stderr, where the error line is checked
            pass

    handler = functools.partial(Quiet, directory=str(www))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", hashlib.sha256(body).hexdigest()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_fetch_checks_the_pinned_hash(server, tmp_path, capsys):
    url, digest = server
    out = tmp_path / "data"
    argv = ["data", "dev-v2.0", "--output-dir", str(out), "--base-url", url, "--sha256", digest, "--no-progress"]
    assert main(argv) == 0
    assert f"wrote {out / 'dev-v2.0.json'}" in capsys.readouterr().out
    assert hashlib.sha256((out / "dev-v2.0.json").read_bytes()).hexdigest() == digest
    assert main(argv) == 0  # present with the right hash: not downloaded again
    assert "up to date" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["dev-v2.0.json"]  # no temporaries


def test_mismatch_is_refused_and_nothing_written(server, tmp_path, capsys):
    url, _ = server
    out = tmp_path / "data"
    # The real pinned hash of dev-v2.0 does not match the stand-in: refused, one line, exit 2, nothing left.
    assert main(["data", "dev-v2.0", "--output-dir", str(out), "--base-url", url, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and FILES["dev-v2.0"].sha256 in err and "not written" in err
    assert not out.exists() or not any(out.iterdir())


def test_missing_file_and_unknown_name(server, tmp_path, capsys):
    url, _ = server
    assert main(["data", "train-v1.1", "--output-dir", str(tmp_path), "--base-url", url, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "download failed" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == [tmp_path / "www"]
    assert main(["data", "nope"]) == 2
    assert "known: dev-v1.1, train-v1.1, dev-v2.0, train-v2.0" in capsys.readouterr().err


def test_listing_and_pins():
    """The pins: the shipped dev-v1.1.json.gz decompresses to the pinned dev-v1.1 hash (the others are the
    official hashes as published by projects that pin them)."""
    import gzip

    from bertrt.resources import squad_dev

    assert hashlib.sha256(gzip.decompress(squad_dev().read_bytes())).hexdigest() == FILES["dev-v1.1"].sha256
    assert all(len(f.sha256) == 64 and f.url().startswith("https://rajpurkar.github.io/") for f in FILES.values())
    assert main(["data", "--json"]) == 0
