"""Public data files fetched once into a data directory, each from a repository at a pinned
commit and checked against the sha256 it has there, so that every user gets the same bytes.

The standard continual-RE split of FewRel is CEAR's `data/FewRel` (RP-CRE's split and its 5
orders; `cml/data/cre.py` reads it), with the relation names of FewRel's own `pid2name.json`.
`$CML_MIRROR` replaces the raw GitHub host (the same `owner/name/commit/path` layout below it),
for a mirror or a local copy (`file://...`).
"""

from __future__ import annotations

import os
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import torch

from cml.errors import CMLInputError

GITHUB_RAW = "https://raw.githubusercontent.com"


@dataclass(frozen=True)
class Release:
    """Files of one repository folder at one commit, by path under that folder, with their sha256."""

    repo: str  # owner/name on GitHub
    commit: str
    folder: str
    files: dict[str, str]
    what: str  # what the files are, for messages

    def url(self, name: str) -> str:
        return f"{os.environ.get('CML_MIRROR', GITHUB_RAW).rstrip('/')}/{self.repo}/{self.commit}/{self.folder}/{name}"

    @property
    def page(self) -> str:
        """Where a person downloads the files by hand."""
        return f"https://github.com/{self.repo}/tree/{self.commit}/{self.folder}"


def missing(releases: tuple[Release, ...], directory: Path) -> list[str]:
    return [name for release in releases for name in release.files if not (directory / name).exists()]


def fetch(releases: tuple[Release, ...], directory: Path) -> None:
    """Download every file of `releases` that `directory` lacks. A file lands under its name only
    once its checksum is right (torch.hub downloads to a unique temporary file beside it, shows
    progress, and removes the temporary file on any failure), so an interrupted or corrupted
    download leaves nothing that a later run would read."""
    made: list[Path] = []  # directories this call created, removed again if a failure leaves them empty
    try:
        for release in releases:
            for name, sha256 in release.files.items():
                target = directory / name
                if target.exists():
                    continue
                made += [p for p in reversed(target.parents) if not p.exists()]
                target.parent.mkdir(parents=True, exist_ok=True)
                _download(release.url(name), target, sha256, releases, directory)
    except CMLInputError:
        for path in reversed(made):
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        raise


def _download(url: str, target: Path, sha256: str, releases: tuple[Release, ...], directory: Path) -> None:
    try:
        torch.hub.download_url_to_file(url, str(target), hash_prefix=sha256, progress=True)
    except (urllib.error.URLError, OSError) as e:
        raise CMLInputError(
            f"could not download {url} ({getattr(e, 'reason', e)}). Without network, put these files "
            f"in this directory: {placement(releases)}",
            directory,
        ) from None
    except RuntimeError as e:  # torch.hub's hash check
        name = target.relative_to(directory).as_posix()
        raise CMLInputError(f"checksum mismatch for {name} downloaded from {url} ({e})", directory) from None


def placement(releases: tuple[Release, ...]) -> str:
    """Which files go where, and where to get them, for an error message."""
    parts = []
    for release in releases:
        names = list(release.files)
        shown = (
            ", ".join(names) if len(names) <= 4 else f"{names[0]}, {names[1]}, ..., {names[-1]} ({len(names)} files)"
        )
        parts.append(f"{shown}: {release.what}, from {release.page}")
        if len(names) > 4:
            parts[-1] += " (keep the sub-folders)"
    return "; ".join(parts)


CEAR_FEWREL = Release(
    "nju-websoft/CEAR",
    "8a38336ca3a7ce8ddb073a4de36310d3603ca447",
    "data/FewRel",
    {
        "task_order.json": "fe37e6273691330bbaa1255de8c1c6254b189f6ee5e1668ac1c478d834831b54",
        "Exp0/task_0_train.json": "7a425b7a29a575eda9031e83e9a3490fa92d0e237d8a6d3b53b5024de753e379",
        "Exp0/task_0_val.json": "676fe51f5ac98108a6cc58f073b1a283cf141a95a12c034b9326a9b0f7db3c3f",
        "Exp0/task_0_test.json": "31f6a84199a7f9decc4b5b824b83cecc8f36f15954f3b41e5e5561737c1ce4c1",
        "Exp0/task_1_train.json": "9d4d2ba89645e00c0f3ae9af616cab33c6cb2ca3188cc06382ae85730fdfc2d7",
        "Exp0/task_1_val.json": "d73a4f820acfeb533aefc2909f59997fd83136f565a8fa5bd9b31a812e999cb6",
        "Exp0/task_1_test.json": "e34dffd70f5a54172d500af5174b16a3cda02df9e24720cdd52add104694735d",
        "Exp0/task_2_train.json": "8801fffa6783673ec49e71407313b25c9da68f7de9d281364615d093961494d4",
        "Exp0/task_2_val.json": "155fcfe4baab2b35351643501247126482121c4e6d377b00382e20d6f31c34e5",
        "Exp0/task_2_test.json": "e7efac7d5f782d3f24e96833054d41cf0ca834b4b3dc5bba9b82e52691376afc",
        "Exp0/task_3_train.json": "8bbe594c7aba392cf6601f1887d0d863320e7a88f61815fa4e13e839ccc0ce6b",
        "Exp0/task_3_val.json": "0b226f6bb5edcf226a7288ca097bee4c8f73fd49dd2e3384512cf745a924274f",
        "Exp0/task_3_test.json": "68acb5ff8e67aed758ed5feb549902f1fba77b06a705b0f47633053748bd1edd",
        "Exp0/task_4_train.json": "86402c61d1c55e95e6497ce5edc17c50d588d644bbfb8abc4cd406b27890ea84",
        "Exp0/task_4_val.json": "c003c79d15ffcc498dfb912cefdcc5acf6c8142b307eae5e9d841a06fa32d405",
        "Exp0/task_4_test.json": "2f912caf17052a66413953e53a86da9bf4271b8006736d46e301fc162c5fc1e4",
        "Exp0/task_5_train.json": "0f53a5a6763cf555747a4a8e78a2a6c7ddf8089cfbe4c80957c2420d217fbafa",
        "Exp0/task_5_val.json": "b325842ebff36dd48d34000671a8a9fa387d0fa2d8fa7661746e1ff277000559",
        "Exp0/task_5_test.json": "ecbd3a10a8b565cedccd0b7cf6d387621028541d7c9cabc42f65f47ef93cfc9a",
        "Exp0/task_6_train.json": "3baf68919e4967799db8a243b67aab51e1dcece9d617c800fad2cc5e675a76aa",
        "Exp0/task_6_val.json": "935cd27dd792e1749a55163e90e661f9cdfe7fbfe7098ef973ceaf61ce89d0c4",
        "Exp0/task_6_test.json": "1cf0fd07947997f795fb52bd7f3250d646c8457a52e0204ca6909809f8d2cddc",
        "Exp0/task_7_train.json": "681d5c083eed91ed81b95677deaa112b8d4a12f349009527deaefcf60391228c",
        "Exp0/task_7_val.json": "29e4aec5fce0d98b4ac2a80b34195644d6bb3d1d16227b40085b6d807177dfc7",
        "Exp0/task_7_test.json": "de96b0b501a43e945d2706deec133b22f76c7a16b1b8c6892fd8408124612ee7",
        "Exp0/task_8_train.json": "3956dde5fae5b9d6f00b00f1a4b13702802acd0e9292603eb8f1caf3e44bdf6a",
        "Exp0/task_8_val.json": "684238fdc780a279594a231995486216f00554e97a930e7c992b1edb9085ba40",
        "Exp0/task_8_test.json": "8f59ccc075b6c4979bbdd3cc5d8b88c1b860a09e53b9479c427ab5ceba67d98b",
        "Exp0/task_9_train.json": "2592bf5b83ba8c95e3f7325afe1c91c9a348f91650e1021c40a602881f8b4761",
        "Exp0/task_9_val.json": "ca1046797eab2e85df2c42a98119f78be3524a544abf708bd43d4036883b1013",
        "Exp0/task_9_test.json": "56e97b74f825dd480e7067d88400943271876d16ebb4a51f03a67a63538f2483",
    },
    "the standard continual-RE split of FewRel (RP-CRE's, as CEAR ships it) and its 5 task orders",
)
FEWREL_NAMES = Release(
    "thunlp/FewRel",
    "278a2315d2138810a379cd8d5718914dc56e2582",
    "data",
    {"pid2name.json": "eeedd25512a8e4c2bc06b78009836d27de81807bcba6ed929debd5cd713c07ea"},
    "FewRel's relation names",
)
STANDARD_FEWREL = (CEAR_FEWREL, FEWREL_NAMES)
