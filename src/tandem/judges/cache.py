"""A cache of verdicts: in memory, and optionally appended to a JSONL file that later runs read back.

The key hashes everything that decides the answer: the judge backend (model directory or endpoint and
model name), the template's fingerprint, chain-of-thought on/off, and the question's prompt and
responses (in the order shown). Only usable verdicts are stored, so a timeout is asked again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import replace
from pathlib import Path

from tandem.judges.verdict import Verdict

logger = logging.getLogger("tandem.judges")


def verdict_key(identity: str, template_fingerprint: str, cot: bool, fields: dict[str, str]) -> str:
    """sha256 of (backend, template, chain-of-thought, question fields)."""
    text = json.dumps(
        {"judge": identity, "template": template_fingerprint, "cot": cot, "fields": fields},
        sort_keys=True, ensure_ascii=False,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class VerdictCache:
    """Verdicts by key; with `path`, every new verdict is appended to that JSONL file and loaded on start.

    Lines that cannot be read (a run killed mid-write) are skipped with a warning; the last line of a
    key wins.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path).expanduser()
        self._verdicts: dict[str, Verdict] = {}
        self._lock = threading.Lock()
        if self.path is not None and self.path.exists():
            self._load()

    def _load(self) -> None:

        bad = 0
        with open(self.path, encoding="utf-8") as file:
            for line in file:
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    self._verdicts[entry["key"]] = Verdict.from_dict(entry["verdict"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    bad += 1
        if bad:
            logger.warning("verdict cache %s: skipped %d unreadable line(s)", self.path, bad)

    def __len__(self) -> int:
        return len(self._verdicts)

    def get(self, key: str) -> Verdict | None:
        verdict = self._verdicts.get(key)
        return None if verdict is None else replace(verdict, cached=True)

    def put(self, key: str, verdict: Verdict) -> None:
        verdict = replace(verdict, cached=False)
        with self._lock:
            self._verdicts[key] = verdict
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as file:
                    file.write(json.dumps({"key": key, "verdict": verdict.as_dict()}, ensure_ascii=False) + "\n")
