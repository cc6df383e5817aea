"""One ranged GET from the Hub, and what its answer must be before a byte of it is used.

Shared by the downloader (:mod:`ollamads.hub.transfer`) and the header fetch
(:mod:`ollamads.hub.headers`), so both follow the Hub's redirect the same way (the token only
to the Hub's own host), refuse the same answers and retry the same ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit

import requests

from ollamads.errors import HubError
from ollamads.hub.api import auth_headers, public_headers, status_error
from ollamads.hub.listing import RemoteFile

MAX_REDIRECTS = 5
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
READ_SIZE = 1 << 20
#: A server's Retry-After is honoured up to this many seconds per wait.
MAX_RETRY_AFTER_S = 60.0
_REDIRECTS = (301, 302, 303, 307, 308)


class RetryLater(Exception):
    """The answer is worth asking for again (after ``wait`` seconds when the server said)."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.wait = wait


def host_of(url: str) -> str:
    return urlsplit(url).netloc.lower()


def network_failure(exc: BaseException, url: str) -> RetryLater:
    what = "timed out" if isinstance(exc, requests.Timeout) else "could not connect"
    return RetryLater(f"{what} to {host_of(url)}")


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (a number or an HTTP date), capped."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def etag_sha256(value: str | None) -> str | None:
    """The sha256 in an ``X-Linked-Etag`` (``"<hex>"`` or ``W/"<hex>"``), else None."""
    if not value:
        return None
    tag = value.removeprefix("W/").strip('"').lower()
    return tag if len(tag) == 64 and all(c in "0123456789abcdef" for c in tag) else None


def require_listed_upload(file: RemoteFile, response: requests.Response) -> None:
    """Refuse an answer from the Hub naming another sha256 than the listing did."""
    served = etag_sha256(response.headers.get("X-Linked-Etag"))
    if file.sha256 and served and served != file.sha256:
        response.close()
        raise HubError(
            f"{file.path} changed on the Hub since the listing "
            f"(sha256 {file.sha256[:12]}… is now {served[:12]}…); nothing of the new upload was kept",
            "re-run the same command: it plans again from the current listing",
        )


def ranged_get(
    session: requests.Session,
    url: str,
    hub_host: str,
    pos: int,
    end: int,
    *,
    what: str,
    check: Callable[[requests.Response], None] | None = None,
) -> requests.Response:
    """GET ``bytes=pos-(end-1)`` of ``url`` (streamed), following redirects by hand so the token
    only goes to the Hub's own host. ``check`` sees every answer, the Hub's redirect and the
    CDN's bytes alike (the real CDNs send no ``X-Linked-Etag``; where one does, a changed file
    is refused at once, else the sha256 at the end refuses it). Returns the last answer whatever
    its status; a network failure is a :class:`RetryLater` naming the host that failed."""
    for _ in range(MAX_REDIRECTS + 1):
        on_hub_host = host_of(url) == hub_host
        headers = {
            **(auth_headers() if on_hub_host else public_headers()),
            "Range": f"bytes={pos}-{end - 1}",
            "Accept-Encoding": "identity",
        }
        try:
            response = session.get(
                url, headers=headers, stream=True, allow_redirects=False,
                timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise network_failure(exc, url) from None
        if check is not None:
            check(response)
        if response.status_code in _REDIRECTS and "Location" in response.headers:
            url = urljoin(url, response.headers["Location"])
            response.close()
            continue
        return response
    raise HubError(f"the Hub redirected {what} more than {MAX_REDIRECTS} times", "try again later")


def require_range(
    response: requests.Response, file: RemoteFile, pos: int, end: int, *, repo: str, hub_host: str,
    whole_file_hint: str = "a proxy between here and the Hub may strip Range headers; try again later",
) -> None:
    """Return only for a 206 carrying exactly ``bytes pos-(end-1)/size``; raise otherwise:
    :class:`RetryLater` for what may pass (429, 5xx, a CDN's 403), :class:`HubError` else."""
    status = response.status_code
    if status == 206:
        expected = f"bytes {pos}-{end - 1}/{file.size}"
        got = response.headers.get("Content-Range", "").strip()
        if got != expected:
            raise HubError(
                f"the Hub sent the wrong byte range for {file.path} (asked {expected}, got "
                f"{got!r}); none of it was used",
                "try again later; re-running resumes from the bytes already verified",
            )
        return
    if status == 200:
        raise HubError(
            f"the Hub answered a Range request for {file.path} with the whole file (200); "
            "none of it was used",
            whole_file_hint,
        )
    if status == 416:
        raise HubError(
            f"{file.path} is shorter on the Hub than its listing says",
            "it is being re-uploaded; re-run the same command later",
        )
    if status == 403 and host_of(response.url) != hub_host:
        raise RetryLater("the CDN refused a signed URL (403)", wait=0.0)
    if status == 429 or status >= 500:
        answered = host_of(response.url)
        who = "the Hub" if answered == hub_host else f"the Hub's CDN ({answered})"
        raise RetryLater(f"{who} answered {status}", retry_after(response.headers.get("Retry-After")))
    raise status_error(status, response.headers.get("X-Error-Code"), repo, file.path)


def body_chunks(response: requests.Response, length: int) -> Iterator[bytes]:
    """The body as it arrives, ``length`` bytes in all; a break is :class:`RetryLater`."""
    from urllib3.exceptions import HTTPError as Urllib3Error

    raw = response.raw
    # read1 hands over what has arrived instead of waiting for a full buffer: a kill loses
    # almost nothing, and progress moves smoothly. Old urllib3 lacks it.
    read = raw.read1 if hasattr(raw, "read1") else raw.read
    while length > 0:
        try:
            data = read(min(READ_SIZE, length))
        except (Urllib3Error, OSError):  # reading only: the caller's disk errors are its own
            raise RetryLater("the connection broke off") from None
        if not data:
            raise RetryLater("the connection broke off")
        length -= len(data)
        yield data


__all__ = [
    "RetryLater",
    "body_chunks",
    "etag_sha256",
    "host_of",
    "network_failure",
    "ranged_get",
    "require_listed_upload",
    "require_range",
    "retry_after",
]
