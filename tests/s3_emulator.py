"""A real S3 emulator process for tests: moto in server mode, made as strict
as S3 where moto is not, for the rules safesync relies on.

Fixtures (imported by the root conftest):

- ``s3_emulator`` (session): starts the server on a free loopback port and
  points boto3 at it (``AWS_ENDPOINT_URL``, test credentials, no instance
  metadata lookups) for the whole session; yields its ``http://`` URL.
- ``s3_bucket_url`` (function): a fresh bucket; returns ``s3://<bucket>/prefix``.

What moto (5.2) does not do and S3 does, added by ``StrictS3`` in front of it
(each rule has a test in tests/test_s3_emulator.py citing the S3 docs):

- reject a PutObject/UploadPart body whose ``x-amz-checksum-crc64nvme``
  header does not match it (400 BadDigest; moto stores the claimed value);
- honour ``If-Match`` on CompleteMultipartUpload (moto checks it on
  PutObject only): 412 PreconditionFailed when the stored ETag differs, 404
  NoSuchKey when there is no object (the conditional-writes guide:
  https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html);
- answer a second CompleteMultipartUpload of an upload already completed
  with 404 NoSuchUpload ("the upload ID might be invalid, or the multipart
  upload might have been aborted or completed", CompleteMultipartUpload in
  the API Reference), which a client retrying after a lost answer gets;
  moto answers 200 again;
- return listings (ListObjectsV2) in pages of at most ``LIST_PAGE`` keys:
  S3 "returns some or all (up to 1,000) of the objects" per request, so a
  client must follow continuation tokens; with moto's 1,000 a listing that
  stops after its first page would pass every test of a few objects;
- report when each multipart upload was initiated (moto answers every upload
  with the same date in 2010, which would make every running upload look
  stale to ``cleanup_temp``).

moto already honours what else we rely on: ``If-None-Match: *`` on PutObject
and CompleteMultipartUpload (412), AbortMultipartUpload, unfinished uploads
invisible to GET and listings, the 5 MiB minimum part size, and it computes a
FULL_OBJECT CRC-64/NVME from the stored parts (with awscrt installed).

Run as ``python -m tests.s3_emulator --port N --marker M`` (the fixture does).
"""

from __future__ import annotations

import argparse
import base64
import io
import logging
import os
import re
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, quote, urlencode

import pytest

from tests.emulator_process import Emulator, start

ROOT = Path(__file__).resolve().parent.parent
IDENTITY_PATH = "/_safesync/identity"
TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "safesync-test-access-key", "AWS_DEFAULT_REGION": "us-east-1"}
# AWS_SECRET_ACCESS_KEY is one of the suite's sentinel secrets (tests/sentinels.py).

LIST_PAGE = 3  # keys per listing page (see the module doc)
_UPLOAD_ID = re.compile(rb"<UploadId>([^<]+)</UploadId>")
_UPLOAD = re.compile(rb"<Upload>.*?</Upload>", re.S)
_INITIATED = re.compile(rb"<Initiated>[^<]*</Initiated>")


def _crc64nvme(data: bytes) -> str:
    from awscrt.checksums import crc64nvme

    return base64.b64encode(crc64nvme(data).to_bytes(8, "big")).decode("ascii")


def _error(code: str, message: str, status: str = "400 Bad Request") -> tuple[str, list[tuple[str, str]], bytes]:
    body = f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return status, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))], body.encode()


class StrictS3:
    """WSGI middleware around moto's server app (see the module doc)."""

    def __init__(self, app: Callable[..., Iterable[bytes]], marker: str) -> None:
        self.app = app
        self.marker = marker.encode()
        self.initiated: dict[bytes, datetime] = {}
        self.completed: set[str] = set()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method, path, query = environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")
        if path == IDENTITY_PATH:
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [self.marker]
        if method == "PUT" and "HTTP_X_AMZ_CHECKSUM_CRC64NVME" in environ:
            refusal = self._check_body(environ)
            if refusal:
                status, headers, body = refusal
                start_response(status, headers)
                return [body]
        if method == "GET" and "list-type=2" in query.split("&"):
            environ["QUERY_STRING"] = self._paged(query)
        if method == "POST" and "uploadId=" in query:
            return self._complete(environ, start_response, parse_qs(query)["uploadId"][0])
        uploads = "uploads" in query.split("&") or query.startswith("uploads=")
        if uploads and method in ("POST", "GET"):
            return self._rewrite(environ, start_response, self._record if method == "POST" else self._dates)
        return self.app(environ, start_response)

    @staticmethod
    def _check_body(environ: dict[str, Any]):
        """S3 recomputes a body's checksum and refuses a mismatch (BadDigest)."""
        if "aws-chunked" in environ.get("HTTP_CONTENT_ENCODING", ""):
            return None  # the checksum is a trailer; we always send it as a header
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
        if _crc64nvme(body) != environ["HTTP_X_AMZ_CHECKSUM_CRC64NVME"]:
            return _error("BadDigest", "The CRC64NVME you specified did not match the calculated checksum.")
        return None

    @staticmethod
    def _paged(query: str) -> str:
        """ListObjectsV2 asks for at most LIST_PAGE keys (S3 may return fewer than max-keys)."""
        params = parse_qsl(query, keep_blank_values=True)
        asked = next((int(v) for k, v in params if k == "max-keys" and v.isdigit()), 1000)
        return urlencode([*((k, v) for k, v in params if k != "max-keys"), ("max-keys", str(min(asked, LIST_PAGE)))], quote_via=quote)

    def _complete(self, environ: dict[str, Any], start_response: Callable[..., Any], upload_id: str) -> Iterable[bytes]:
        """CompleteMultipartUpload: once per upload, and honouring If-Match."""
        refusal = None
        if upload_id in self.completed:
            refusal = _error("NoSuchUpload", "The specified upload does not exist.", "404 Not Found")
        elif "HTTP_IF_MATCH" in environ:
            refusal = self._check_if_match(environ)
        if refusal:
            status, headers, body = refusal
            start_response(status, headers)
            return [body]

        def done(body: bytes) -> bytes:
            if b"<Error>" not in body:
                self.completed.add(upload_id)
            return body

        return self._rewrite(environ, start_response, done)

    def _check_if_match(self, environ: dict[str, Any]):
        """CompleteMultipartUpload with If-Match: S3 completes only over the
        object with that ETag. moto's own HEAD with the same header decides
        (its PutObject compares the same way)."""
        head = {**environ, "REQUEST_METHOD": "HEAD", "QUERY_STRING": "", "CONTENT_LENGTH": "0", "wsgi.input": io.BytesIO()}
        head.pop("HTTP_CONTENT_MD5", None)
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            captured["status"] = status
            return lambda _data: None

        b"".join(self.app(head, capture))
        if captured["status"].startswith("404"):
            return _error("NoSuchKey", "The specified key does not exist.", "404 Not Found")
        if captured["status"].startswith("412"):
            return _error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold", "412 Precondition Failed")
        return None

    def _rewrite(self, environ, start_response, edit: Callable[[bytes], bytes]) -> list[bytes]:
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            captured.update(status=status, headers=headers)
            return lambda _data: None

        body = b"".join(self.app(environ, capture))
        if captured["status"].startswith("200"):
            body = edit(body)
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        start_response(captured["status"], [*headers, ("Content-Length", str(len(body)))])
        return [body]

    def _record(self, body: bytes) -> bytes:
        """CreateMultipartUpload: remember when each upload began."""
        for upload_id in _UPLOAD_ID.findall(body):
            self.initiated[upload_id] = datetime.now(timezone.utc)
        return body

    def _dates(self, body: bytes) -> bytes:
        """ListMultipartUploads: the real initiation time of each upload."""

        def fix(match: re.Match[bytes]) -> bytes:
            block = match.group(0)
            found = _UPLOAD_ID.search(block)
            when = self.initiated.get(found.group(1)) if found else None
            if when is None:
                return block
            stamp = when.strftime("%Y-%m-%dT%H:%M:%S.000Z").encode()
            return _INITIATED.sub(b"<Initiated>" + stamp + b"</Initiated>", block)

        return _UPLOAD.sub(fix, body)


def serve(port: int, marker: str) -> None:
    """Run moto's S3 server behind StrictS3 on 127.0.0.1:``port``."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = StrictS3(DomainDispatcherApplication(create_backend_app), marker)
    run_simple("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)


# --- the fixtures -----------------------------------------------------------------


def _ready(host: str, marker: str) -> bool:
    try:
        with urllib.request.urlopen(host + IDENTITY_PATH, timeout=1) as resp:
            return resp.status == 200 and resp.read().decode() == marker
    except (urllib.error.URLError, OSError, ValueError):
        return False


def start_emulator(timeout: float = 30.0) -> Emulator:
    """Start the server on a free local port and wait until it answers.
    Big objects spill from moto's buffers into the emulator's own folder."""

    def command(port: int, host: str, marker: str, workdir: Path) -> list[str]:
        env["TMPDIR"] = str(workdir)
        return [sys.executable, "-m", "tests.s3_emulator", "--port", str(port), "--marker", marker]

    env = dict(os.environ)
    return start("s3-emulator", command, _ready, timeout=timeout, env=env, cwd=ROOT)


def s3_client() -> Any:
    """A plain boto3 client on the emulator (for test set-up and inspection)."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(s3={"addressing_style": "path"}))


@pytest.fixture(scope="session")
def s3_emulator() -> Iterator[str]:
    """The emulator URL; boto3's environment points at it for the session
    (and is restored afterwards)."""
    emulator = start_emulator()
    try:
        with pytest.MonkeyPatch.context() as env:
            for name, value in {**TEST_CREDENTIALS, "AWS_ENDPOINT_URL": emulator.host, "AWS_EC2_METADATA_DISABLED": "true"}.items():
                env.setenv(name, value)
            env.delenv("AWS_ENDPOINT_URL_S3", raising=False)
            yield emulator.host
    finally:
        emulator.stop()


@pytest.fixture
def s3_bucket_url(s3_emulator: str) -> str:
    """A new empty bucket per test, so tests never see each other's objects."""
    name = f"test-{uuid.uuid4().hex[:20]}"
    s3_client().create_bucket(Bucket=name)
    return f"s3://{name}/prefix"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--marker", required=True)
    args = parser.parse_args()
    serve(args.port, args.marker)


if __name__ == "__main__":
    main()
