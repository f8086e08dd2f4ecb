"""Every download the pipeline may attempt, and how a run fails fast when it cannot make it.

The pipeline downloads nothing of its own (RCTD's likelihood table is computed, never fetched);
a library it calls may: StarDist fetches its pretrained ``2D_versatile_he`` model on first use
when ``--stardist_model`` is not given. Each such download is one :class:`Download` in
:data:`DOWNLOADS`, with the parameter that avoids it. Before a run uses one,
:func:`require` (run by CHECK_SAMPLESHEET, the first task) checks that it is already on this
machine or that its host answers; around the library call that downloads, :func:`fetching`
turns a network failure into the same one line. Setting ``SPATIALMAP_OFFLINE=1`` forbids every
download: a file that is not already on the machine is refused at once, without a try.
"""

from __future__ import annotations

import contextlib
import os
import socket
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

from spatialmap.cli import InputError

OFFLINE_ENV = "SPATIALMAP_OFFLINE"
PROBE_TIMEOUT_S = 10.0  # a host that does not answer a TCP connection in 10 s is taken as unreachable
FETCH_TIMEOUT_S = 60.0  # a download that stalls for a minute stops (the library would wait for ever)


@dataclass(frozen=True)
class Download:
    """One file a library may download: what it is, from where, where it lands, how to avoid it."""

    what: str
    url: str
    avoid: str  # the parameter (and what to give it) that makes the download unnecessary
    cached: Callable[[], Path]  # the file the library keeps once downloaded

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or self.url


def keras_cache() -> Path:
    """Where Keras' ``get_file`` (used by csbdeep / StarDist) keeps downloads: ``$KERAS_HOME`` or ``~/.keras``,
    ``/tmp/.keras`` when that is not writable (as Keras chooses)."""
    base = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    if base.exists() and not os.access(base, os.W_OK):
        return Path("/tmp/.keras")
    return base


# StarDist registers its pretrained models with csbdeep (stardist/models/__init__.py); get_file keeps
# the zip under <keras cache>/models/StarDist2D/<name>/<name>.zip and checks its hash
STARDIST_HE = Download(
    what="StarDist's pretrained model 2D_versatile_he",
    url="https://github.com/stardist/stardist-models/releases/download/v0.1/python_2D_versatile_he.zip",
    avoid="--stardist_model DIR (a local StarDist model folder: config.json and weights_best.h5)",
    cached=lambda: keras_cache() / "models" / "StarDist2D" / "2D_versatile_he" / "2D_versatile_he.zip",
)
DOWNLOADS = {"stardist_2D_versatile_he": STARDIST_HE}


def offline() -> bool:
    """``SPATIALMAP_OFFLINE`` is set (to anything but 0, false or no): no download is tried."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def message(download: Download, where: str, reason: str) -> str:
    """The one line a run stops with: what was to be downloaded, why it cannot be, the parameter that avoids it."""
    return (
        f"{where}: {download.what} is not on this machine and cannot be downloaded from {download.host} "
        f"({reason}); to run without internet give {download.avoid}"
    )


def unreachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the host of ``url`` cannot be reached (a TCP connection to its port), or None when it answers."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except socket.gaierror as err:
        return f"its name does not resolve: {err.strerror or err}"
    except TimeoutError:
        return f"no answer in {timeout:g} s"
    except OSError as err:
        return str(err.strerror or err)


def require(download: Download, where: str, timeout: float = PROBE_TIMEOUT_S) -> str:
    """Check, before a run uses ``download``, that it is on this machine or that its host answers.

    Returns ``"cached"`` or ``"reachable"``.

    Raises
    ------
    InputError
        Neither (or ``SPATIALMAP_OFFLINE`` is set and it is not on the machine): one line naming
        the parameter that avoids the download.
    """
    if download.cached().is_file():
        return "cached"
    if offline():
        raise InputError(message(download, where, f"{OFFLINE_ENV} is set"))
    reason = unreachable(download.url, timeout)
    if reason:
        raise InputError(message(download, where, reason))
    return "reachable"


def _network_error(err: BaseException) -> bool:
    """A failed download: urllib's errors, a socket error or timeout, or Keras' ``Exception("URL fetch failure ...")``."""
    if isinstance(err, (urllib.error.URLError, socket.gaierror, TimeoutError, ConnectionError)):
        return True
    return str(err).startswith("URL fetch failure")


@contextlib.contextmanager
def fetching(download: Download, where: str, timeout: float = FETCH_TIMEOUT_S) -> Iterator[None]:
    """Around a library call that may download ``download``: offline, refused before the try; a network
    failure (or a stall of ``timeout`` s) becomes the one line of :func:`message`."""
    if offline() and not download.cached().is_file():
        raise InputError(message(download, where, f"{OFFLINE_ENV} is set"))
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        yield
    except Exception as err:  # Keras' get_file raises a plain Exception for a failed fetch
        if not _network_error(err):
            raise
        reason = str(getattr(err, "reason", None) or err).splitlines()[0]
        reason = reason.split(" -- ", 1)[-1]  # Keras: "URL fetch failure on <url>: None -- <reason>"
        raise InputError(message(download, where, reason)) from err
    finally:
        socket.setdefaulttimeout(previous)
