"""Shared plumbing for the ``bin/`` scripts: logging, error exits, safe writes."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterable, Iterator

log = logging.getLogger("spatialmap")


class InputError(ValueError):
    """A problem with the user's input; reported as one line, exit status 1."""


def setup_runtime() -> None:
    """Point caches that libraries write to at writable places (containers run as any user)."""
    tmp = Path(tempfile.gettempdir())
    for var, sub in (("MPLCONFIGDIR", "mpl"), ("NUMBA_CACHE_DIR", "numba")):
        if not os.environ.get(var):
            path = tmp / f"spatialmap-{os.getuid()}-{sub}"
            path.mkdir(parents=True, exist_ok=True)
            os.environ[var] = str(path)
    os.environ.setdefault("MPLBACKEND", "Agg")
    home = os.environ.get("HOME")
    if not home or not os.access(home, os.W_OK):
        os.environ["HOME"] = str(tmp)


def run(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run a script's ``main``; a user error exits 1 with one line on stderr."""
    setup_runtime()
    logging.basicConfig(
        level=os.environ.get("SPATIALMAP_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        main(argv)
    except (ValueError, FileNotFoundError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"ERROR: {message}", file=sys.stderr)
        sys.exit(1)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only on success.

    Nothing half-written is left behind when the body raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    tmp_path.chmod(0o666 & ~umask)  # mkstemp makes 0600; published files follow the umask
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def package_versions(packages: Iterable[str]) -> dict[str, str]:
    """Installed versions of ``packages`` (``"not installed"`` where absent)."""
    versions = {"python": sys.version.split()[0]}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_versions(path: str | os.PathLike, process: str, packages: Iterable[str]) -> None:
    """Write an nf-core style ``versions.yml``: ``{process: {tool: version}}``."""
    lines = [f'"{process}":']
    lines += [f'    {name}: "{version}"' for name, version in package_versions(packages).items()]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
