"""Small text corpora built from text that ships with Python; nothing is downloaded, and each is
deterministic for a given Python version.

- ``docstring_sentences()`` splits the docstrings of standard-library modules (and their public
  functions and classes) into sentences, each labelled with the topic of its module group in
  ``TOPICS`` (files, data formats, numbers, text, concurrency, networking).
- ``byte_sequences(texts, seq_len)`` cuts text into fixed-length sequences of byte tokens.
- ``stdlib_source_text()`` is the ASCII source code of ``SOURCE_MODULES``, a character corpus.
"""

from __future__ import annotations

import re

__all__ = ["TOPICS", "docstring_sentences", "byte_sequences", "SOURCE_MODULES",
           "stdlib_source_text"]

#: topic -> standard-library modules whose docstrings are its sentences
TOPICS = {
    "files": ("os", "os.path", "pathlib", "shutil", "glob", "tempfile", "filecmp", "fnmatch",
              "io", "stat"),
    "formats": ("json", "csv", "pickle", "zipfile", "tarfile", "gzip", "base64", "struct",
                "configparser", "plistlib", "xml.etree.ElementTree"),
    "numbers": ("math", "cmath", "statistics", "random", "decimal", "fractions", "numbers",
                "operator", "heapq", "bisect"),
    "text": ("string", "re", "textwrap", "difflib", "unicodedata", "codecs", "locale", "gettext",
             "html", "shlex"),
    "concurrency": ("threading", "multiprocessing", "queue", "asyncio", "concurrent.futures",
                    "subprocess", "sched", "signal", "selectors", "contextvars"),
    "network": ("socket", "ssl", "http.client", "urllib.request", "urllib.parse", "smtplib",
                "email", "ftplib", "ipaddress", "mimetypes"),
}

_SPLIT = re.compile(r"(?<=[.!?])\s+")


def _docstrings(module_name: str):
    import importlib
    import inspect

    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return
    doc = inspect.getdoc(module)
    if doc:
        yield doc
    for name in sorted(getattr(module, "__all__", None) or dir(module)):
        if name.startswith("_"):
            continue
        obj = getattr(module, name, None)
        if (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)) and \
                (getattr(obj, "__module__", None) or "").split(".")[0].lstrip("_") == module_name.split(".")[0].lstrip("_"):
            doc = inspect.getdoc(obj)
            if doc:
                yield doc


def docstring_sentences(min_chars: int = 30, max_chars: int = 200):
    """``(sentences, labels, topic_names)``: unique sentences from docstrings, each labelled with
    the index of its module's topic in ``topic_names``."""
    seen = set()
    sentences, labels = [], []
    names = sorted(TOPICS)
    for label, topic in enumerate(names):
        for module_name in TOPICS[topic]:
            for doc in _docstrings(module_name):
                text = " ".join(doc.split())
                for sent in _SPLIT.split(text):
                    sent = sent.strip()
                    if not (min_chars <= len(sent) <= max_chars) or sent in seen:
                        continue
                    if sum(ch.isalpha() for ch in sent) < 0.6 * len(sent):
                        continue  # signatures, tables, code
                    seen.add(sent)
                    sentences.append(sent)
                    labels.append(label)
    return sentences, labels, names


def byte_sequences(texts, seq_len: int):
    """Concatenate texts (newline-separated) as UTF-8 bytes and cut them into sequences of
    ``seq_len`` byte tokens: numpy int64 (num_sequences, seq_len)."""
    import numpy as np

    data = np.frombuffer("\n".join(texts).encode("utf-8"), dtype=np.uint8).astype(np.int64)
    n = len(data) // seq_len
    return data[: n * seq_len].reshape(n, seq_len)


#: pure-Python standard-library modules whose source text makes ``stdlib_source_text``
SOURCE_MODULES = ("argparse", "textwrap", "difflib", "calendar", "string", "json.decoder",
                  "json.encoder", "fractions", "statistics", "shlex", "heapq", "bisect",
                  "functools", "dataclasses", "pathlib", "fnmatch", "glob", "csv")


def stdlib_source_text(max_chars: int = 400_000) -> str:
    """ASCII source text of the modules of ``SOURCE_MODULES`` (other characters become ``?``), the
    first ``max_chars`` characters."""
    import importlib
    import inspect

    parts = []
    for name in SOURCE_MODULES:
        try:
            parts.append(inspect.getsource(importlib.import_module(name)))
        except (ImportError, OSError, TypeError):
            continue
    text = "\n".join(parts).encode("ascii", "replace").decode("ascii")
    if len(text) < 10_000:
        raise RuntimeError("could not read standard-library sources to build the text corpus; "
                           "this Python install ships without .py sources.")
    return text[:max_chars]
