"""The two age benchmarks, IMDB-WIKI-DIR and AgeDB-DIR: what differs between them.

Where each published split file is, its rows per split, the valid ages, the cap of the balanced
draw and the default data root.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ranksim.data.age.imdb_wiki import IMDB_WIKI_AGE_RANGE

DIR_REPO_RAW = "https://raw.githubusercontent.com/YyzHarry/imbalanced-regression/main/"


@dataclass(frozen=True)
class AgeBenchmark:
    """What differs between the two age benchmarks."""

    name: str                      # command and split-file stem
    title: str
    split_url: str                 # the DIR authors' published split file
    split_size: int | None         # its size in bytes when known (checked after download)
    split_sha256: str | None = None  # its SHA-256 when known (checked after download)
    published: dict = field(default_factory=dict)  # rows per split of the published split
    published_source: str = ""
    age_range: tuple = (0, 120)    # valid ages in the split file, inclusive
    max_per_age: int = 30          # cap of val (and of test) rows per age
    default_root: str = ""         # the root the benchmark configs read (configs/*/base.yaml)

    @property
    def split_file(self) -> str:
        return f"{self.name}.csv"


IMDB_WIKI = AgeBenchmark(
    name="imdb_wiki", title="IMDB-WIKI-DIR",
    # Size and hash unknown here (no copy of the file was at hand): the download is checked by its
    # rows per split against the published counts instead, and its SHA-256 is logged.
    split_url=DIR_REPO_RAW + "imdb-wiki-dir/data/imdb_wiki.csv", split_size=None,
    published={"train": 191_509, "val": 11_022, "test": 11_022}, published_source="DIR paper",
    age_range=IMDB_WIKI_AGE_RANGE, max_per_age=150, default_root="data/imdb-wiki-dir")
AGEDB = AgeBenchmark(
    name="agedb", title="AgeDB-DIR",
    # 687,669 bytes: the published file as checked against the copy in ../shared/data.
    split_url=DIR_REPO_RAW + "agedb-dir/data/agedb.csv", split_size=687_669,
    split_sha256="ab9f8d4c7099a9d74ec5094c42b6fe9f1927a166a48d2ab800a88b2fd6081252",
    published={"train": 12_208, "val": 2_140, "test": 2_140}, published_source="published agedb.csv",
    # Published ages are 1..101; 0..120 also admits a rebuilt split of any AgeDB release.
    age_range=(0, 120), max_per_age=30, default_root="data/agedb-dir")
BENCHMARKS = {b.name: b for b in (IMDB_WIKI, AGEDB)}
