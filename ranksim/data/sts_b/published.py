"""The published STS-B-DIR split files: where they are, their sizes and hashes, downloading them."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ranksim.data.files import sha256_of
from ranksim.data.sts_b.split_files import SPLIT_FILES
from ranksim.errors import UserError

logger = logging.getLogger(__name__)

PUBLISHED_ROWS = {"train": 5249, "val": 1000, "test": 1000}


@dataclass(frozen=True)
class SplitSource:
    """Where one published version of the split files lives.

    ``base_urls`` are tried in order: a pinned commit first (reproducible), then ``HEAD`` (the
    default branch) in case the commit ever becomes unreachable. ``files`` maps a file name to
    ``(bytes, sha256)`` when the content is known; the download is then checked against it, which
    also makes the ``HEAD`` fallback safe.
    """

    description: str
    base_urls: tuple[str, ...]
    files: dict[str, tuple[int, str]] | None


# The RankSim paper's split (the default, and the one in ../shared/data/sts-b-dir). Sizes and
# hashes were computed on those files, whose text matches the repository's stored copies.
RANKSIM_SOURCE = SplitSource(
    description="RankSim repository (BorealisAI/ranksim-imbalanced-regression), the RankSim paper's split",
    base_urls=(
        "https://raw.githubusercontent.com/BorealisAI/ranksim-imbalanced-regression/"
        "b08052da550d61837b1218106f688a732d06bcca/sts-b-dir/glue_data/STS-B/",
        "https://raw.githubusercontent.com/BorealisAI/ranksim-imbalanced-regression/HEAD/sts-b-dir/glue_data/STS-B/",
    ),
    files={
        "train_new.tsv": (920605, "cc71336eb2061891c3f165fa9f812c780f1e86eca0f81e62b4da49ecb9dfb3d1"),
        "dev_new.tsv": (170200, "e5b56cd14e68a5d02ec2a05bfe11d1a45d74582170e61e679c1288f05aa82535"),
        "test_new.tsv": (169190, "8fd7e51459a3deb30adedde0d6a777fea60d2f8a4c65ac86c76d25ca560f3bc8"),
    },
)
# The DIR paper's split: a different unseeded draw (they share only 168 of the 1,000 test pairs),
# so results on it are not comparable with the RankSim paper's. Its hashes are not recorded here;
# the row counts are still checked after the download.
DIR_SOURCE = SplitSource(
    description="DIR repository (YyzHarry/imbalanced-regression), the DIR paper's split",
    base_urls=(
        "https://raw.githubusercontent.com/YyzHarry/imbalanced-regression/"
        "c37d6f46d35e5a0b37277d8d925ad112ed8ef487/sts-b-dir/glue_data/STS-B/",
        "https://raw.githubusercontent.com/YyzHarry/imbalanced-regression/HEAD/sts-b-dir/glue_data/STS-B/",
    ),
    files=None,
)
SOURCES = {"ranksim": RANKSIM_SOURCE, "dir": DIR_SOURCE}


def _download(url: str, dest: Path, expected_size: int | None = None) -> Path:
    # One indirection so that tests can replace the network; imported late so that reading the
    # data never needs the downloader.
    from ranksim.data.download import download
    return download(url, dest, expected_size)


def matches_published(path: Path, expected: tuple[int, str] | None) -> bool:
    """Whether ``path`` has the published ``(bytes, sha256)``; always true when they are not known."""
    return expected is None or (path.stat().st_size == expected[0] and sha256_of(path) == expected[1])


def download_splits(root: str | os.PathLike, source: str = "ranksim", base_url: str | None = None,
                    force: bool = False) -> None:
    """Fetch the three split files of ``source`` into ``root``, checking sizes and hashes when known.

    A file already there and matching is kept (without known hashes, any file there is kept). One
    that differs (a rebuilt split?) is an error unless ``force``, which replaces it. ``base_url`` (ending in ``/``) replaces the source's URLs,
    for a mirror or a test server; the hashes still apply.
    """
    if source not in SOURCES:
        raise UserError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    spec = SOURCES[source]
    root = Path(root)
    created_root = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    bases = (base_url if base_url.endswith("/") else base_url + "/",) if base_url else spec.base_urls
    logger.info("STS-B-DIR split from the %s", spec.description)
    names = list(SPLIT_FILES.values())
    for i, name in enumerate(names):
        dest = root / name
        expected = spec.files[name] if spec.files else None
        if dest.is_file():
            if matches_published(dest, expected):
                logger.info("%s is already there and matches the published file", dest)
                continue
            if not force:
                raise UserError(f"{dest} exists but differs from the published {source} file (a rebuilt split, "
                                f"or another source?). Pass --force to replace it, or use another --root")
            dest.unlink()
        reasons = []
        for j, base in enumerate(bases):
            try:
                _download(base + name, dest, expected[0] if expected else None)
                break
            except UserError as err:
                reasons.append(getattr(err, "reason", str(err)))
                if j + 1 < len(bases):
                    logger.info("%s: %s; trying %s", name, reasons[-1], bases[j + 1])
        else:
            # One message for every file still to get, not one per file and URL: offline, all fail alike.
            missing = [n for n in names[i:]
                       if not ((root / n).is_file() and matches_published(root / n, spec.files[n] if spec.files else None))]
            if created_root and root.is_dir() and not any(root.iterdir()):
                root.rmdir()
            raise UserError(f"could not download {name} ({'; '.join(dict.fromkeys(reasons))}). Download "
                            f"{', '.join(missing)} by hand from {bases[0]} (a browser works), put them in "
                            f"{root}, then run this command again")
        if not matches_published(dest, expected):
            dest.unlink()
            raise UserError(f"{base + name} gave a file whose SHA-256 differs from the published one; it "
                            f"was deleted. Try again later, or use --rebuild --glue-dir")
