"""`bertrt data`: fetch the SQuAD files that do not ship with bertrt from their public address, each checked
against a pinned SHA-256 before it is published (atomically: a failed or mismatched download leaves nothing).

SQuAD v1.1 dev ships with the package (bertrt.resources.squad_dev()); the rest is fetched on request. The pinned
hashes and sizes are those of the official files as published at rajpurkar.github.io (dev-v1.1 checked here against
the shipped copy; the others as listed, identically, by several public projects that pin them, e.g. ParlAI)."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from bertrt.artifacts import atomic_output, sha256_file
from bertrt.errors import BertrtError

BASE_URL = "https://rajpurkar.github.io/SQuAD-explorer/dataset/"
LICENSE = "CC BY-SA 4.0 (Rajpurkar et al., 2016; 2018 for v2.0)"


@dataclass(frozen=True)
class DataFile:
    name: str  # what `bertrt data NAME` calls it
    filename: str
    sha256: str
    size: int  # bytes, for the progress bar and the listing
    what: str

    def url(self, base_url: str = BASE_URL) -> str:
        return base_url.rstrip("/") + "/" + self.filename


FILES: dict[str, DataFile] = {f.name: f for f in (
    DataFile("dev-v1.1", "dev-v1.1.json", "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9",
             4_854_279, "SQuAD v1.1 dev, 10,570 questions (also shipped, gzip, as the default data.dev)"),
    DataFile("train-v1.1", "train-v1.1.json", "3527663986b8295af4f7fcdff1ba1ff3f72d07d61a20f487cb238a6ef92fd955",
             30_288_272, "SQuAD v1.1 train, 87,599 questions (calibration: --calib-json)"),
    DataFile("dev-v2.0", "dev-v2.0.json", "80a5225e94905956a6446d296ca1093975c4d3b3260f1d6c8f68bc2ab77182d8",
             4_370_528, "SQuAD v2.0 dev, 11,873 questions, a third unanswerable"),
    DataFile("train-v2.0", "train-v2.0.json", "68dcfbb971bd3e96d5b46c7177b16c1a4e7d4bdef19fb204502738552dede002",
             42_123_633, "SQuAD v2.0 train, 130,319 questions"),
)}


def fetch(name: str, directory: str | Path, *, base_url: str = BASE_URL, sha256: str | None = None,
          progress: bool = False, timeout: float = 60.0) -> tuple[Path, bool]:
    """Download FILES[name] into `directory`; returns (path, downloaded). A file already there with the pinned
    hash is kept (downloaded False). `sha256` overrides the pinned hash (a mirror's own file, the tests)."""
    if name not in FILES:
        raise BertrtError(f"unknown data file {name!r} (known: {', '.join(FILES)})")
    entry = FILES[name]
    expected = (sha256 or entry.sha256).lower()
    target = Path(directory) / entry.filename
    if target.is_file() and sha256_file(target) == expected:
        return target, False
    url = entry.url(base_url)
    digest = hashlib.sha256()
    with atomic_output(target) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or None
                with _bar(total, entry.filename, progress) as bar:
                    while chunk := response.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
                        bar.update(len(chunk))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise BertrtError(f"{url}: download failed ({reason}); nothing written") from None
        if digest.hexdigest() != expected:  # raising here discards the temporary: nothing is published
            raise BertrtError(f"{url}: sha256 {digest.hexdigest()} is not the pinned {expected}; "
                              f"{target} not written")
    return target, True


def _bar(total: int | None, desc: str, enabled: bool):
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=None if enabled else True, leave=False)
