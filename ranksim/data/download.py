"""A small resumable downloader on the standard library (``urllib``), with a tqdm progress bar.

``download(url, dest)`` fetches ``url`` into ``dest``:

- Bytes go to ``dest + ".part"`` first; the file is renamed to ``dest`` only once it is complete,
  so a file at ``dest`` is always a whole download (or a file the user placed there by hand, which
  is trusted and not fetched again).
- An existing ``.part`` file is resumed with an HTTP ``Range`` request. A server that ignores the
  range (answers 200 instead of 206) makes the download start again from byte 0.
- The size is checked against ``expected_size`` when the caller knows it, and otherwise against
  the server's ``Content-Length``. A wrong size is a :class:`~ranksim.errors.UserError`.
- A network failure (no route, DNS, refused, timeout, HTTP error) is a ``UserError`` that names the
  URL and says where to put the file after downloading it by hand.

``file://`` URLs work too (without resume), which is how mirrors on a shared disk and the tests
use it.
"""

from __future__ import annotations

import http.client
import logging
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from ranksim.errors import UserError

logger = logging.getLogger(__name__)

# 1 MiB reads keep Python overhead negligible against network speed, and the bar smooth.
CHUNK_SIZE = 1 << 20
# Seconds without any byte before a read gives up; long enough for a slow academic server.
TIMEOUT_S = 60.0
USER_AGENT = "ranksim-data-prepare/1 (python urllib)"


class DownloadFailed(UserError):
    """The network or the server failed; ``reason`` is the cause alone, for callers that try
    several URLs and give the by-hand hint once for all of them."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def _by_hand_hint(url: str, dest: Path) -> str:
    return f"Download {url} by hand (a browser works) and place it at {dest}, then run this command again."


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _check_existing(dest: Path, expected_size: int | None) -> bool:
    """True when ``dest`` is already there and of the right size (nothing to do)."""
    if not dest.is_file():
        return False
    size = dest.stat().st_size
    if expected_size is not None and size != expected_size:
        raise UserError(
            f"{dest} has {size:,} bytes but {expected_size:,} are expected: it is incomplete or a "
            f"different file. Delete it and run this command again to download it.")
    logger.info("%s is already there (%s bytes); not downloading it again", dest, f"{size:,}")
    return True


def _open(url: str, offset: int, timeout: float, dest: Path):
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset > 0:
        request.add_header("Range", f"bytes={offset}-")
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416:
            # The range starts at or past the end: the .part file may already hold everything.
            return err
        reason = f"HTTP {err.code} {err.reason}"
        raise DownloadFailed(f"{url} answered {reason}. {_by_hand_hint(url, dest)}", reason) from None
    except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as err:
        reason = f"cannot reach {urllib.parse.urlsplit(url).netloc or url}: {getattr(err, 'reason', err)}"
        raise DownloadFailed(f"cannot reach {url} ({getattr(err, 'reason', err)}): is the network up? "
                             f"{_by_hand_hint(url, dest)}", reason) from None


def _content_range_start(value: str | None) -> int | None:
    # "bytes 100-999/1000" -> 100
    if not value or not value.startswith("bytes "):
        return None
    try:
        return int(value[len("bytes "):].split("-", 1)[0])
    except ValueError:
        return None


def download(url: str, dest: str | os.PathLike, expected_size: int | None = None, *,
             desc: str | None = None, timeout: float = TIMEOUT_S, progress: bool = True) -> Path:
    """Download ``url`` to ``dest``, resuming a previous partial download; return ``dest``.

    Args:
        url: ``http(s)://`` or ``file://`` URL.
        dest: final file path; its folder is created. ``dest + ".part"`` holds the bytes so far.
        expected_size: the file's size in bytes when known; checked before and after the transfer.
        desc: label of the progress bar (default: the file name).
        timeout: seconds without progress before giving up (the ``.part`` file is kept).
        progress: show a tqdm bar.

    Raises:
        UserError: the network or server failed, the transfer was cut, or the size is wrong.
    """
    dest = Path(dest)
    if _check_existing(dest, expected_size):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    offset = part.stat().st_size if part.is_file() else 0
    if expected_size is not None and offset > expected_size:
        logger.warning("%s is larger than the expected %s bytes; starting again", part, f"{expected_size:,}")
        part.unlink()
        offset = 0

    response = _open(url, offset, timeout, dest)
    with response:
        status = getattr(response, "status", None) or response.getcode() or 200
        length_header = response.headers.get("Content-Length")
        length = int(length_header) if length_header and length_header.isdigit() else None
        if status == 416:
            total = _content_range_total(response.headers.get("Content-Range"))
            if offset > 0 and total in (offset, None) and expected_size in (offset, None):
                logger.info("%s was already complete", part)
                return _finish(part, dest, offset, expected_size or total, url)
            # The server's file shrank or changed under us: start again.
            logger.warning("the server refused to resume %s; starting again from byte 0", url)
            part.unlink()
            return download(url, dest, expected_size, desc=desc, timeout=timeout, progress=progress)
        if status == 206 and offset > 0:
            start = _content_range_start(response.headers.get("Content-Range"))
            if start is not None and start != offset:
                raise UserError(f"{url} resumed at byte {start} instead of {offset}. "
                                f"Delete {part} and run this command again.")
            mode = "ab"
            logger.info("resuming %s at %s bytes", url, f"{offset:,}")
        else:
            if offset > 0:
                logger.warning("%s does not support resuming; starting again from byte 0", url)
            offset, mode = 0, "wb"
        total = offset + length if length is not None else None
        if expected_size is not None and total is not None and total != expected_size:
            raise UserError(f"{url} offers {total:,} bytes but {expected_size:,} are expected: the server "
                            f"holds a different file. {_by_hand_hint(url, dest)}")
        written = offset
        with open(part, mode) as out, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                           unit_divisor=1024, desc=desc or dest.name,
                                           disable=not progress) as bar:
            while True:
                try:
                    chunk = response.read(CHUNK_SIZE)
                except (http.client.HTTPException, urllib.error.URLError, socket.timeout, ConnectionError,
                        OSError) as err:
                    # Only the network read is caught here: a full disk on write keeps its own error.
                    raise UserError(f"the download of {url} stopped after {written:,} bytes ({err!r}). Run "
                                    f"this command again to resume from {part}.") from None
                if not chunk:
                    break
                out.write(chunk)
                written += len(chunk)
                bar.update(len(chunk))
    return _finish(part, dest, written, expected_size if expected_size is not None else total, url)


def _content_range_total(value: str | None) -> int | None:
    # "bytes */1000" -> 1000
    if not value or "/" not in value:
        return None
    tail = value.rsplit("/", 1)[1]
    return int(tail) if tail.isdigit() else None


def _finish(part: Path, dest: Path, size: int, want: int | None, url: str) -> Path:
    if want is not None and size != want:
        if size < want:
            raise UserError(f"the download of {url} stopped at {size:,} of {want:,} bytes. Run this "
                            f"command again to resume from {part}.")
        part.unlink()
        raise UserError(f"the download of {url} gave {size:,} bytes, more than the expected {want:,}; "
                        f"the partial file was deleted. {_by_hand_hint(url, dest)}")
    os.replace(part, dest)
    logger.info("downloaded %s (%s bytes)", dest, f"{size:,}")
    return dest
