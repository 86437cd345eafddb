"""Downloading and caching the official SpectralGPT weights from Zenodo (record 8412455).

The record lists each file with its size, published checksum ("md5:<hex>") and download link in
the Zenodo records API. A download goes to ``NAME.part`` and resumes with an HTTP Range request
after an interruption; only a file whose checksum matches is renamed to ``NAME``, so a file with
the final name is always complete.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import appdirs

from ..errors import HyperAdaptError, JobCancelled
from .identity import OFFICIAL, BackboneIdentity

log = logging.getLogger(__name__)

ZENODO_RECORD_ID = "8412455"
ZENODO_API = f"https://zenodo.org/api/records/{ZENODO_RECORD_ID}"
# Official files and the input size each was pretrained at.
OFFICIAL_WEIGHTS = {"SpectralGPT+.pth": 128, "SpectralGPT.pth": 96}
DEFAULT_WEIGHTS = "SpectralGPT+.pth"
CACHE_DIR_ENV = "HYPERADAPT_CACHE_DIR"
CHUNK_BYTES = 256 * 1024   # small enough that cancel() is checked often on slow links
TIMEOUT_S = 30
PROGRESS_INTERVAL_S = 0.2
USER_AGENT = "HyperAdapt (QGIS plugin)"


class DownloadInterrupted(HyperAdaptError):
    """The connection ended before the whole file arrived; the partial file is kept for resuming."""


def weights_cache_dir() -> Path:
    """Folder for downloaded weights; ``HYPERADAPT_CACHE_DIR`` replaces the per-user cache root."""
    root = os.environ.get(CACHE_DIR_ENV) or appdirs.user_cache_dir("hyperadapt")
    return Path(root) / "weights"


def find_cached_weights(name: str = DEFAULT_WEIGHTS, *, dest_dir=None) -> Path | None:
    """The complete downloaded file ``name``, or None when it has not been downloaded."""
    path = Path(dest_dir or weights_cache_dir()) / name
    return path if path.is_file() and path.stat().st_size > 0 else None


def recorded_weights(identity: BackboneIdentity) -> Path | None:
    """The weights an adapter records, where this machine has them: the file it was made from,
    else for the official weights the download cache; None when neither is here."""
    if identity.path and Path(identity.path).is_file():
        return Path(identity.path)
    if identity.kind == OFFICIAL:
        return find_cached_weights(identity.name or DEFAULT_WEIGHTS)
    return None


def _open(url: str, headers: dict | None = None):
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})
    return urllib.request.urlopen(request, timeout=TIMEOUT_S)


def _unreachable(url: str, error: Exception) -> HyperAdaptError:
    reason = getattr(error, "reason", None) or error
    return HyperAdaptError(f"Could not reach {urlparse(url).netloc} to download the SpectralGPT "
                           f"weights ({reason}); check the internet connection or download the "
                           f"file by hand.")


def fetch_file_entry(name: str, api_url: str = ZENODO_API) -> dict:
    """The record's entry for ``name``: ``{"url", "size", "algorithm", "checksum"}``."""
    try:
        with _open(api_url, {"Accept": "application/json"}) as response:
            record = json.loads(response.read().decode("utf-8"))
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        raise _unreachable(api_url, error) from error
    except ValueError as error:
        raise HyperAdaptError(f"The record at {api_url} is not valid JSON.") from error
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, list):
        raise HyperAdaptError(f"The record at {api_url} lists no files.")
    entry = next((item for item in files if isinstance(item, dict) and item.get("key") == name),
                 None)
    if entry is None:
        names = ", ".join(str(item.get("key")) for item in files if isinstance(item, dict))
        raise HyperAdaptError(f"The record at {api_url} has no file named {name} (it has: {names}).")
    links = entry.get("links") or {}
    url = links.get("self") or links.get("content") or links.get("download")
    algorithm, _, checksum = str(entry.get("checksum", "")).partition(":")
    if not url or not checksum or algorithm not in hashlib.algorithms_available:
        raise HyperAdaptError(f"The record at {api_url} gives no download link or no usable "
                              f"checksum for {name}.")
    return {"url": url, "size": int(entry.get("size") or 0), "algorithm": algorithm,
            "checksum": checksum.lower()}


def _hash_existing(path: Path, algorithm: str):
    digest = hashlib.new(algorithm)
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest


def _download_once(entry: dict, part: Path, name: str, progress, cancel):
    """One request: continue ``part`` from its current length; returns the running digest."""
    offset = part.stat().st_size if part.exists() else 0
    size = entry["size"]
    if size and offset > size:
        part.unlink()
        offset = 0
    if size and offset == size:
        return _hash_existing(part, entry["algorithm"])
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = _open(entry["url"], headers)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            # The server has nothing past our end: the part file may already be complete.
            return _hash_existing(part, entry["algorithm"])
        raise HyperAdaptError(f"The download of {name} was refused by the server "
                              f"(HTTP {error.code}).") from error
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        raise DownloadInterrupted(f"The download of {name} could not start ({error}).") from error
    with response:
        if offset and response.status != 206:
            log.info("Server ignored the Range request; downloading %s from the start.", name)
            offset = 0
        digest = _hash_existing(part, entry["algorithm"]) if offset else hashlib.new(
            entry["algorithm"])
        done = offset
        last_report = 0.0
        with open(part, "ab" if offset else "wb") as stream:
            try:
                while True:
                    if cancel is not None and cancel():
                        raise JobCancelled(f"The download of {name} was cancelled; starting it "
                                           f"again resumes it.")
                    chunk = response.read(CHUNK_BYTES)
                    if not chunk:
                        break
                    stream.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    now = time.monotonic()
                    if progress is not None and size and now - last_report >= PROGRESS_INTERVAL_S:
                        last_report = now
                        progress(min(done / size, 1.0), f"Downloading {name}: "
                                 f"{done / 1e6:,.0f} of {size / 1e6:,.0f} MB")
            except (http.client.HTTPException, OSError) as error:
                raise DownloadInterrupted(
                    f"The download of {name} stopped after {done / 1e6:,.1f} MB ({error}); "
                    f"starting it again resumes it.") from error
    if size and done < size:
        raise DownloadInterrupted(f"The download of {name} stopped after {done / 1e6:,.1f} of "
                                  f"{size / 1e6:,.1f} MB; starting it again resumes it.")
    return digest


def download_weights(name: str = DEFAULT_WEIGHTS, *, api_url: str = ZENODO_API, dest_dir=None,
                     progress=None, cancel=None, max_attempts: int = 3) -> Path:
    """Download ``name`` from the Zenodo record into the cache (or dest_dir) and return its path.

    Args:
        name: file name in the record (``SpectralGPT+.pth`` or ``SpectralGPT.pth``).
        api_url: the record's JSON in the Zenodo records API.
        dest_dir: target folder; the weights cache (``weights_cache_dir()``) by default.
        progress: ``progress(fraction, message)``, called while bytes arrive.
        cancel: ``cancel() -> bool``, checked between chunks; cancelling keeps the partial file.
        max_attempts: connections tried when one breaks off; each resumes where the last stopped.
    """
    dest = Path(dest_dir) if dest_dir is not None else weights_cache_dir()
    target = dest / name
    if target.is_file():
        return target
    dest.mkdir(parents=True, exist_ok=True)
    entry = fetch_file_entry(name, api_url)
    part = dest / f"{name}.part"
    for attempt in range(1, max_attempts + 1):
        try:
            digest = _download_once(entry, part, name, progress, cancel)
            break
        except DownloadInterrupted as error:
            if attempt == max_attempts:
                raise
            log.info("%s Retrying (%d of %d).", error, attempt + 1, max_attempts)
    if digest.hexdigest() != entry["checksum"]:
        part.unlink(missing_ok=True)
        raise HyperAdaptError(f"The downloaded {name} does not match its published "
                              f"{entry['algorithm']} checksum, so it was deleted; download it again.")
    os.replace(part, target)
    if progress is not None:
        progress(1.0, f"Downloaded {name}")
    return target
