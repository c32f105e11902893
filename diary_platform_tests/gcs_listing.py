"""Object listing in gcp-storage-emulator as Cloud Storage documents it (JSON API `objects.list`).

The emulator answers a listing with every object of the bucket in one response, in the order they were
written, and ignores `startOffset`, `endOffset`, `maxResults` and `pageToken`. Cloud Storage returns names
in lexicographic order, from `startOffset` (inclusive) to `endOffset` (exclusive), at most `maxResults`
per page with a `nextPageToken` for the rest. The bucket sensor relies on exactly that, so the tests and
the benchmark swap the emulator's listing for this one (prefix, delimiter-free listings only; others go
to the emulator's own handler), and the real google-cloud-storage client pages through it.
"""

from contextlib import contextmanager
from http import HTTPStatus

from gcp_storage_emulator import server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

API_MAX_RESULTS = 1000


def _query(request, name: str) -> str | None:
    values = request.query.get(name)
    return values[0] if values else None


def documented_listing(request, response, storage, *args, **kwargs):
    if _query(request, "delimiter") or _query(request, "matchGlob") or _query(request, "softDeleted"):
        return objects.ls(request, response, storage, *args, **kwargs)
    try:
        files, _ = storage.get_file_list(request.params["bucket_name"], _query(request, "prefix"))
    except NotFound:
        response.status = HTTPStatus.NOT_FOUND
        return None
    start = max(_query(request, "startOffset") or "", _query(request, "pageToken") or "")
    end = _query(request, "endOffset")
    names = sorted((f for f in files if f["name"] >= start and (end is None or f["name"] < end)), key=lambda f: f["name"])
    page_size = min(int(_query(request, "maxResults") or API_MAX_RESULTS), API_MAX_RESULTS)
    body = {"kind": "storage#objects", "prefixes": [], "items": names[:page_size]}
    if len(names) > page_size:
        body["nextPageToken"] = names[page_size]["name"]
    response.json(body)
    return None


@contextmanager
def documented_listings():
    """Within the block, every emulator in this process lists objects as Cloud Storage does."""
    routes = [handlers for _, handlers in server.HANDLERS if handlers.get(server.GET) is objects.ls]
    for handlers in routes:
        handlers[server.GET] = documented_listing
    try:
        yield
    finally:
        for handlers in routes:
            handlers[server.GET] = objects.ls
