"""Runs `gcp-storage-emulator` for the tests, with what TensorStore needs of Cloud
Storage's conditional requests and the object move that gcsfs tries first:

  python tests/gcs_emulator.py PORT

The package's media download sends no `x-goog-generation` header and ignores the
`ifGenerationMatch` / `ifGenerationNotMatch` preconditions. TensorStore (under Orbax)
reads an object's generation from that header and updates OCDBT manifests with
conditional writes, so without them a checkpoint of more than a few arrays fails
("Malformed StorageGeneration"). gcsfs moves an object with the `moveTo` call, which the
package lacks (gcsfs then falls back to copy and delete, logging an error per object).
Real Cloud Storage has all three; this adds them. And the package parses a multipart
upload with Python's email parser, which takes an object's last byte for part of the
line break before the closing boundary when that byte is a carriage return: gcsfs ends
its body with a bare newline, so an object ending in b"\r" was stored one byte short
(about one binary file in 256; a model directory of a dozen files was "damaged" now and
then). Here such bodies are split on the boundary byte for byte.
"""

from __future__ import annotations

import json
import sys
import threading
from http import HTTPStatus

from gcp_storage_emulator import server, settings
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects


def _generation(request, storage) -> str | None:
    try:
        obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    except NotFound:
        return None
    return str(obj["generation"])


def _precondition_failed(request, current: str | None) -> HTTPStatus | None:
    """The status a Cloud Storage precondition gives, or None when it holds."""
    match = request.query.get("ifGenerationMatch", [None])[0]
    not_match = request.query.get("ifGenerationNotMatch", [None])[0]
    if match is not None and (current or "0") != match:
        return HTTPStatus.PRECONDITION_FAILED
    if not_match is not None and current is not None and current == not_match:
        return HTTPStatus.NOT_MODIFIED
    return None


def _download(request, response, storage, *args, **kwargs):
    current = _generation(request, storage)
    status = _precondition_failed(request, current)
    if status is not None and current is not None:
        response.status = status
        return
    if current is not None:
        response["x-goog-generation"] = current
        response["x-goog-metageneration"] = "1"
    return _original_download(request, response, storage, *args, **kwargs)


def _insert(request, response, storage, *args, **kwargs):
    if "upload_id" not in request.query and "name" in request.query:
        request.params["object_id"] = request.query["name"][0]
        status = _precondition_failed(request, _generation(request, storage))
        if status is not None:
            response.status = HTTPStatus.PRECONDITION_FAILED
            return
    return _original_insert(request, response, storage, *args, **kwargs)


def _move(request, response, storage, *args, **kwargs):
    bucket, source = request.params["bucket_name"], request.params["object_id"]
    try:
        moved = objects._copy(
            request.base_url, storage, bucket, source, bucket, request.params["dest_object_id"]
        )
    except NotFound:
        response.status = HTTPStatus.NOT_FOUND
        return
    objects._delete(storage, bucket, source)
    response.json(moved)


def _multipart(raw: bytes, content_type: str) -> dict:
    """A multipart/related upload's metadata and content, exactly: each part ends at the
    line break (the client's own, CRLF or LF, as its first delimiter line shows) before
    the next delimiter, and nothing else is taken off."""
    import email.message

    header = email.message.Message()
    header["Content-Type"] = content_type
    delimiter = b"--" + header.get_param("boundary").encode()
    first = raw.index(delimiter) + len(delimiter)
    eol = b"\r\n" if raw[first : first + 2] == b"\r\n" else b"\n"
    parts = []
    for chunk in raw[first:].split(eol + delimiter)[:-1]:
        head, body = chunk.removeprefix(eol).split(eol + eol, 1)
        types = [line for line in head.split(eol) if line.lower().startswith(b"content-type:")]
        parts.append((types[0].split(b":", 1)[1].strip().decode() if types else "", body))
    (_, meta), (kind, content) = parts
    kind = kind.split(";")[0].strip().lower() or "text/plain"  # as email's parser says
    return {"meta": json.loads(meta), "content": content, "content-type": kind}


def _read_data(request_handler, query):
    content_type = request_handler.headers.get("Content-Type") or ""
    if not content_type.startswith("multipart/related"):
        return _original_read_data(request_handler, query)
    raw = server._decode_raw_data(server._read_raw_data(request_handler), request_handler)
    return _multipart(raw, content_type) if raw else None


_original_download, _original_insert = objects.download, objects.insert
_original_read_data = server._read_data
server._read_data = _read_data
for _, handlers in server.HANDLERS:
    for method, handler in list(handlers.items()):
        if handler is objects.download:
            handlers[method] = _download
        elif handler is objects.insert:
            handlers[method] = _insert
server.HANDLERS = (
    (
        rf"^{settings.API_ENDPOINT}/b/(?P<bucket_name>[-.\w]+)/o/"
        r"(?P<object_id>.*[^/]+)/moveTo/o/(?P<dest_object_id>.*[^/]+)$",
        {server.POST: _move},
    ),
    *server.HANDLERS,
)
# By name: `get` with alt=media downloads, the dispatcher's fallback inserts.
objects.download, objects.insert = _download, _insert


def main() -> None:
    port = int(sys.argv[1])
    srv = server.create_server("127.0.0.1", port, in_memory=True)
    srv.start()
    threading.Event().wait()


if __name__ == "__main__":
    main()
