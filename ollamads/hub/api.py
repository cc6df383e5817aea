"""The Hub's endpoint, credentials, and its refusals as one-line errors.

Metadata goes through huggingface_hub (``HfApi``), so ``HF_ENDPOINT``, ``HF_TOKEN`` and
``HF_HOME`` work exactly as they do for ``hf download``. Everything is read when a function
runs, never at import.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from ollamads import __version__
from ollamads.errors import HubError, OllamadsError

LIBRARY_NAME = "ollamads"


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or "").rstrip("/") or constants.ENDPOINT


def hf_api() -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub_endpoint(), library_name=LIBRARY_NAME, library_version=__version__)


def auth_headers() -> dict[str, str]:
    """User-agent and, when a token is configured, ``Authorization``: for the Hub's host only."""
    from huggingface_hub.utils import build_hf_headers

    return build_hf_headers(library_name=LIBRARY_NAME, library_version=__version__)


def public_headers() -> dict[str, str]:
    """What may go to another host (the Hub's CDN): never the token."""
    return {k: v for k, v in auth_headers().items() if k.lower() != "authorization"}


def status_error(status: int, code: str | None, repo: str, path: str | None = None) -> HubError:
    """One line and its fix for an HTTP refusal, from the status and the Hub's X-Error-Code."""
    what = f"{repo}/{path}" if path else repo
    if code == "GatedRepo":
        return HubError(
            f"{repo} is gated: the Hub wants its terms accepted before downloading ({status})",
            "accept the terms on the repo's Hub page, then set HF_TOKEN to a token of that account",
        )
    if code == "RevisionNotFound":
        return HubError(
            f"{repo} has no such revision ({status})", "use a branch, tag or commit that exists"
        )
    if code == "RepoNotFound" or (status == 404 and path is None and code != "EntryNotFound"):
        return HubError(
            f"the Hub has no repo {repo} ({status}), or it is private",
            "check the name; for a private repo set HF_TOKEN to a token that can read it",
        )
    if code == "EntryNotFound" or status == 404:
        return HubError(
            f"the Hub has no file {what} ({status})",
            "the upload was renamed or removed; re-run to plan again from the current listing",
        )
    if status == 401:
        return HubError(
            f"the Hub refused the credentials for {what} (401)",
            "set HF_TOKEN to a valid access token",
        )
    if status == 403:
        return HubError(
            f"the Hub denied access to {what} (403)",
            "accept the repo's terms on its Hub page and set HF_TOKEN to a token with read access",
        )
    return HubError(f"the Hub answered {status} for {what}", "try again later; re-running resumes")


def unreachable(exc: BaseException) -> HubError:
    return HubError(
        f"cannot reach the Hub at {hub_endpoint()} ({type(exc).__name__})",
        "check the network connection (and HF_ENDPOINT or proxy settings), then re-run",
    )


def is_transport_error(exc: BaseException) -> bool:
    # huggingface_hub 1.x raises httpx errors, 2.x httpx2 ones: match both without importing.
    module = type(exc).__module__.split(".")[0]
    return module in ("httpx", "httpx2", "httpcore", "httpcore2") or isinstance(
        exc, (OSError, TimeoutError)
    )


@contextlib.contextmanager
def hub_call(repo: str) -> Iterator[None]:
    """Turn huggingface_hub's exceptions into one-line :class:`HubError` s."""
    from huggingface_hub import errors

    # The library's classes, most specific first (GatedRepoError is a RepositoryNotFoundError).
    codes = (
        (errors.GatedRepoError, "GatedRepo"),
        (errors.RepositoryNotFoundError, "RepoNotFound"),
        (errors.RevisionNotFoundError, "RevisionNotFound"),
        (errors.EntryNotFoundError, "EntryNotFound"),
    )
    try:
        yield
    except errors.OfflineModeIsEnabled as exc:
        raise HubError(
            "HF_HUB_OFFLINE is set, so the Hub cannot be asked", "unset HF_HUB_OFFLINE"
        ) from exc
    except errors.HfHubHTTPError as exc:
        response = exc.response
        status = response.status_code if response is not None else 0
        code = next((c for cls, c in codes if isinstance(exc, cls)), None)
        if code is None and response is not None:
            code = response.headers.get("X-Error-Code")
        raise status_error(status, code, repo) from exc
    except OllamadsError:
        raise
    except Exception as exc:
        if is_transport_error(exc):
            raise unreachable(exc) from exc
        raise
