"""Deterministic, realistic rows for the 1.6 baseline schema (pure: no I/O).

Each table draws from its own random stream (`Random(f"{seed}:<table>")`), so changing the number
of files does not change the users. Times are offsets from a fixed epoch, never "now".
"""

# ruff: noqa: S311 -- seeded PRNGs on purpose: the data must be reproducible, nothing here is a secret
from __future__ import annotations

import json
import mimetypes
import random
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

EPOCH = datetime(2023, 1, 1)
DAY = 86400

MODELS = ("gpt-3.5-turbo", "gpt-4", "gpt-4-turbo", "claude-2", "claude-instant-1", "gemini-pro", "llama-2-70b")
FIRST_NAMES = ("alice", "bob", "carol", "dave", "erin", "frank", "josé", "zoë", "李", "ødegaard", "amélie", "nguyễn")
TOPICS = (
    "Trip planning", "SQL help", "Résumé review", "Birthday ideas 🎂", "Rust lifetimes", "翻译一下",
    "Budget 2023", "Kubernetes \"CrashLoopBackOff\"", "Poem about the sea", "It's complicated", "Recipe: crêpes",
)
# Names a real user base uploads: spaces, quotes, shell metacharacters, unicode, no extension.
FILE_NAMES = (
    "Quarterly report {n}.pdf",
    "meeting notes {n}.txt",
    "it's \"quoted\" {n}.md",
    "résumé \u2013 final {n}.docx",
    "履歴書 {n}.pdf",
    "Screenshot 2023-05-0{n} at 10.41.22.png",
    "data (final) [v{n}].csv",
    "launch 🚀 plan {n}.json",
    "$HOME and `backticks` {n}.txt",
    "semi;colon & ampersand {n}.log",
    "back\\slash {n}.txt",
    "Ünïcödé ñame {n}",
    "archive.tar {n}.gz",
)

USER_SQL = (
    "INSERT INTO users (id, username, email, password_hash, is_admin, preferences, created_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s)"
)
CONVERSATION_SQL = (
    "INSERT INTO conversations (id, user_id, title, model_name, total_tokens, metadata, created_at, updated_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)
FILE_SQL = (
    "INSERT INTO files (id, user_id, file_path, original_name, size, mime_type, created_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s)"
)
CHANNEL_SQL = (
    "INSERT INTO channels (id, name, type, models, secret, endpoint, priority, weight, state, created_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _at(seconds: int) -> datetime:
    return EPOCH + timedelta(seconds=seconds)


def preferences(rng: random.Random) -> str | None:
    """NULL, partial, full, with extra keys or empty: what years of app versions leave behind."""
    roll = rng.random()
    if roll < 0.25:
        return None
    if roll < 0.45:
        return _json({"theme": rng.choice(("dark", "light"))})
    if roll < 0.60:
        return _json({"language": rng.choice(("zh-CN", "fr", "de", "ja", "es")), "temperature": 1.0})
    if roll < 0.80:
        return _json({
            "theme": rng.choice(("dark", "light", "auto")),
            "language": rng.choice(("en", "fr", "zh-CN")),
            "default_model": rng.choice(MODELS),
            "temperature": rng.choice((0.2, 0.5, 1.2)),
            "max_tokens": rng.choice((512, 1024, 4096)),
        })
    if roll < 0.90:
        return _json({"theme": "dark", "font_size": rng.choice((12, 14, 16)), "sidebar": "collapsed"})
    return "{}"


@dataclass
class UserTimes:
    """created_at of each user as seconds after EPOCH (index = user id - 1), kept compact."""

    seconds: array

    def of(self, user_id: int) -> int:
        return self.seconds[user_id - 1]


def users(seed: str, count: int, admin_ratio: float, times: UserTimes) -> Iterator[tuple]:
    rng = random.Random(f"{seed}:users")
    for uid in range(1, count + 1):
        created = rng.randrange(0, 180 * DAY)
        times.seconds.append(created)
        is_admin = 1 if admin_ratio > 0 and (uid == 1 or rng.random() < admin_ratio) else 0
        name = f"{rng.choice(FIRST_NAMES)}.{uid}"
        yield (uid, name, f"user{uid}@example.com", f"$2a$10${rng.getrandbits(256):064x}",
               is_admin, preferences(rng), _at(created))


def conversations(seed: str, times: UserTimes, per_user: int) -> Iterator[tuple]:
    rng = random.Random(f"{seed}:conversations")
    cid = 0
    for uid in range(1, len(times.seconds) + 1):
        user_created = times.of(uid)
        for _ in range(per_user):
            cid += 1
            created = user_created + rng.randrange(0, 90 * DAY)
            updated = created + rng.randrange(0, 7 * DAY)
            model = rng.choice(MODELS)
            tokens = rng.randrange(10, 20000)
            title = rng.choice(TOPICS) if rng.random() < 0.9 else f"Conversation {cid}"
            metadata = None
            if rng.random() < 0.4:
                metadata = _json({"model": model, "token_count": tokens, "pinned": rng.random() < 0.2,
                                  "tags": rng.sample(("work", "fun", "code", "travel"), 2)})
            yield (cid, uid, title, model, tokens, metadata, _at(created), _at(updated))


@dataclass(frozen=True)
class SeedFile:
    id: int
    user_id: int
    path: str  # relative to the storage root
    original_name: str
    content: bytes
    mime_type: str
    created_at: datetime

    def row(self) -> tuple:
        return (self.id, self.user_id, self.path, self.original_name, len(self.content), self.mime_type,
                self.created_at)


def files(seed: str, times: UserTimes, count: int) -> Iterator[SeedFile]:
    """`count` files of random users, stored as uploads/<user id>/<name> (a re-upload of the same
    name gets " (2)" before the extension, like a browser download would)."""
    rng = random.Random(f"{seed}:files")
    taken: dict[int, set[str]] = {}
    users_count = len(times.seconds)
    for fid in range(1, count + 1):
        uid = rng.randint(1, users_count)
        original = rng.choice(FILE_NAMES).format(n=rng.randint(1, 9))
        stored, number = original, 1
        names = taken.setdefault(uid, set())
        while stored in names:
            number += 1
            stem, dot, ext = original.rpartition(".")
            stored = f"{stem} ({number}).{ext}" if dot and stem else f"{original} ({number})"
        names.add(stored)
        content = rng.randbytes(rng.randint(16, 2048))
        mime = mimetypes.guess_type(original)[0] or "application/octet-stream"
        created = times.of(uid) + rng.randrange(0, 120 * DAY)
        yield SeedFile(fid, uid, f"uploads/{uid}/{stored}", original, content, mime, _at(created))


def channels(seed: str) -> list[tuple]:
    rng = random.Random(f"{seed}:channels")
    rows = [
        ("OpenAI", "openai", "gpt-3.5-turbo,gpt-4,gpt-4-turbo", "https://api.openai.com"),
        ("Azure EU", "azure", "gpt-3.5-turbo,gpt-4", "https://example-eu.openai.azure.com"),
        ("Anthropic", "claude", "claude-2,claude-instant-1", "https://api.anthropic.com"),
        ("Local llama", "openai", "llama-2-70b", "http://llama.internal:8080"),
    ]
    return [
        (i, name, kind, models, f"sk-seed-{rng.getrandbits(128):032x}", endpoint, 10 - i, 1, 1, _at(i * DAY))
        for i, (name, kind, models, endpoint) in enumerate(rows, start=1)
    ]
