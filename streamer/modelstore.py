"""The model store and its announcements: which version of a model the detectors should run.

Artifacts are the versioned directories of :mod:`streamer.artifact` (``<model.dir>/<name>/<version>/``;
candidates the retrainer's gate refused live under ``<model.dir>/<name>/rejected/<version>/``). A
version becomes *the* version by an **announcement**: a JSON record on the compacted topic
``topics.models``, keyed by the model name::

    {"schema": "streamer.model/1", "name": "default", "version": "20261128T181347551Z",
     "path": "/srv/models/default/20261128T181347551Z", "checksum": "<sha256 of MANIFEST.json>",
     "validation": {...card validation figures and the retrainer's gate...}, "action": "publish",
     "history": ["2026...Z", "20261128T181347551Z"], "announced_at_ms": 1795889627000,
     "announced_by": "retrainer@host", "signature": "<hex HMAC-SHA256>"}

``history`` lists the versions announced so far (oldest first, this one last, bounded), so that
``streamer models rollback`` still works after compaction has removed the older records. With
``model.hmac_key`` set, every announcement is signed (HMAC-SHA256 over the canonical JSON of every
field but ``signature``) and a follower refuses one whose signature does not verify.

Detectors follow the topic with :class:`ModelFollower` (a plain consumer, ``assign()`` from the
beginning, no consumer group offsets) and load an announced version with :func:`resolve_artifact`,
which checks the signature, the artifact's own file checksums and the announced checksum.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from streamer.config import StreamerConfig
from streamer.errors import ArtifactError, BrokerError, StreamerError

__all__ = [
    "Announcement", "AnnouncementError", "SignatureError", "ANNOUNCEMENT_SCHEMA", "sign", "verify",
    "announcement_for", "publish", "read_announcements", "latest_announcement", "ModelFollower",
    "resolve_artifact", "find_version_dir", "rejected_dir", "ensure_models_topic", "HISTORY",
]

log = logging.getLogger(__name__)

ANNOUNCEMENT_SCHEMA = "streamer.model/1"
# Versions remembered in an announcement's history (rollback depth).
HISTORY = 50
ACTIONS = ("publish", "promote", "rollback")
REJECTED = "rejected"


class AnnouncementError(StreamerError):
    """An announcement record that cannot be used (not JSON, wrong schema, missing field)."""


class SignatureError(AnnouncementError):
    """An announcement whose HMAC signature is missing or does not verify."""


@dataclass
class Announcement:
    name: str
    version: str
    path: str
    checksum: str
    validation: dict[str, Any] = field(default_factory=dict)
    action: str = "publish"
    history: list[str] = field(default_factory=list)
    announced_at_ms: int = 0
    announced_by: str = ""
    signature: str | None = None

    def payload(self) -> dict[str, Any]:
        """Every field but the signature, with the schema tag: what is signed."""
        d = asdict(self)
        d.pop("signature")
        return {"schema": ANNOUNCEMENT_SCHEMA, **d}

    def to_bytes(self) -> bytes:
        d = self.payload()
        if self.signature is not None:
            d["signature"] = self.signature
        return orjson.dumps(d, option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> Announcement:
        if not raw:
            raise AnnouncementError("empty announcement (tombstone)")
        try:
            d = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise AnnouncementError(f"announcement is not JSON: {exc}") from None
        if not isinstance(d, dict) or d.get("schema") != ANNOUNCEMENT_SCHEMA:
            raise AnnouncementError(f"not a {ANNOUNCEMENT_SCHEMA} record")
        for key, tp in (("name", str), ("version", str), ("path", str), ("checksum", str)):
            if not isinstance(d.get(key), tp) or not d[key]:
                raise AnnouncementError(f"announcement field {key!r} missing or not a {tp.__name__}")
        sig = d.get("signature")
        if sig is not None and not isinstance(sig, str):
            raise AnnouncementError("announcement field 'signature' is not a string")
        hist = d.get("history", [])
        if not isinstance(hist, list) or not all(isinstance(h, str) for h in hist):
            raise AnnouncementError("announcement field 'history' is not a list of versions")
        validation = d.get("validation", {})
        if not isinstance(validation, dict):
            raise AnnouncementError("announcement field 'validation' is not an object")
        action = d.get("action", "publish")
        if action not in ACTIONS:
            raise AnnouncementError(f"announcement action {action!r} is not one of {', '.join(ACTIONS)}")
        return cls(name=d["name"], version=d["version"], path=d["path"], checksum=d["checksum"],
                   validation=validation, action=action, history=list(hist),
                   announced_at_ms=int(d.get("announced_at_ms", 0) or 0),
                   announced_by=str(d.get("announced_by", "")), signature=sig)

    def describe(self) -> str:
        return f"{self.name}/{self.version} ({self.action} by {self.announced_by or '?'})"


# -- signatures ---------------------------------------------------------------------------------
def _digest(payload: dict[str, Any], key: str) -> str:
    msg = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    return hmac.new(key.encode("utf-8"), msg, hashlib.sha256).hexdigest()


def sign(ann: Announcement, key: str | None) -> Announcement:
    """The announcement with its HMAC-SHA256 signature (unchanged, unsigned, without a key)."""
    if key:
        ann.signature = _digest(ann.payload(), key)
    return ann


def verify(ann: Announcement, key: str | None) -> None:
    """Raise :class:`SignatureError` unless the signature verifies under ``key``. Without a key
    nothing is checked (signatures are then informative only)."""
    if not key:
        return
    if not ann.signature:
        raise SignatureError(f"announcement {ann.name}/{ann.version} is not signed (model.hmac_key is set)")
    if not hmac.compare_digest(ann.signature, _digest(ann.payload(), key)):
        raise SignatureError(f"announcement {ann.name}/{ann.version}: bad signature (not signed with model.hmac_key)")


# -- the store on disk -------------------------------------------------------------------------
def rejected_dir(cfg: StreamerConfig) -> Path:
    return Path(cfg.model.dir) / cfg.model.name / REJECTED


def find_version_dir(cfg: StreamerConfig, version: str) -> Path | None:
    """The directory of ``version``: the store, or its ``rejected/`` corner; None when absent."""
    for p in (Path(cfg.model.dir) / cfg.model.name / version, rejected_dir(cfg) / version):
        if (p / "MANIFEST.json").is_file():
            return p
    return None


def announcement_for(cfg: StreamerConfig, path: str | Path, *, action: str, history: list[str],
                     by: str | None = None) -> Announcement:
    """An (unsigned) announcement of the artifact at ``path``: checksum and validation figures from
    the artifact itself; ``history`` is the previous announcement's."""
    from streamer.artifact import checksum

    path = Path(path)
    try:
        manifest = orjson.loads((path / "MANIFEST.json").read_bytes())
        card = orjson.loads((path / "card.json").read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ArtifactError(f"not a readable model artifact: {path} ({exc})") from None
    validation = dict(card.get("validation", {}))
    if "gate" in card:
        validation["gate"] = card["gate"]
    version = manifest["version"]
    hist = [v for v in history if v != version][-(HISTORY - 1):] + [version]
    return Announcement(
        name=manifest["name"], version=version, path=str(path.resolve()), checksum=checksum(path),
        validation=validation, action=action, history=hist, announced_at_ms=int(time.time() * 1000),
        announced_by=by or f"{os.environ.get('USER', 'streamer')}@{socket.gethostname()}",
    )


def resolve_artifact(cfg: StreamerConfig, ann: Announcement) -> Any:
    """Load and verify the artifact an announcement names: signature (with ``model.hmac_key``),
    every file's checksum, and the announced checksum. Raises a :class:`StreamerError` subclass
    with one clear sentence otherwise."""
    from streamer.artifact import checksum, load_artifact_dir

    verify(ann, cfg.model.hmac_key)
    candidates = [Path(ann.path), Path(cfg.model.dir) / ann.name / ann.version]
    path = next((p for p in candidates if (p / "MANIFEST.json").is_file()), None)
    if path is None:
        raise ArtifactError(f"announced model {ann.name}/{ann.version} not found at {ann.path} "
                            f"nor under {cfg.model.dir}/")
    actual = checksum(path)
    if actual != ann.checksum:
        raise ArtifactError(f"announced model {ann.name}/{ann.version}: checksum mismatch "
                            f"(announced {ann.checksum[:12]}, {path} has {actual[:12]})")
    model = load_artifact_dir(path)  # verifies every file against the manifest
    if (model.name, model.version) != (ann.name, ann.version):
        raise ArtifactError(f"announced model {ann.name}/{ann.version}: {path} holds {model.name}/{model.version}")
    return model


# -- the topic ---------------------------------------------------------------------------------
def ensure_models_topic(cfg: StreamerConfig) -> None:
    """Create ``topics.models`` (one partition, ``cleanup.policy=compact``) if it does not exist."""
    from streamer.kafka_io import ensure_topics, wait_for_broker

    admin = wait_for_broker(cfg.kafka)
    ensure_topics(admin, [cfg.topics.models], partitions=1, config={"cleanup.policy": "compact"})


def publish(cfg: StreamerConfig, ann: Announcement) -> Announcement:
    """Sign (with ``model.hmac_key``) and produce the announcement, keyed by model name; returns
    once the broker has acknowledged it."""
    from streamer.kafka_io import producer_config

    ensure_models_topic(cfg)
    sign(ann, cfg.model.hmac_key)
    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    producer = Producer({**producer_config(cfg.kafka), "on_delivery": on_delivery})
    producer.produce(cfg.topics.models, key=ann.name.encode("utf-8"), value=ann.to_bytes())
    left = producer.flush(30)
    if left or errors:
        raise BrokerError(f"announcement of {ann.name}/{ann.version} not acknowledged: {errors[:1] or 'timeout'}")
    log.info("announced %s on %s (checksum %s)", ann.describe(), cfg.topics.models, ann.checksum[:12])
    return ann


def _models_consumer(cfg: StreamerConfig) -> Consumer:
    from streamer.kafka_io import client_config

    # A plain consumer: assign(), never subscribe(); the group id is required by librdkafka but no
    # offset is ever committed, so every follower reads the (compacted) topic from its beginning.
    return Consumer({**client_config(cfg.kafka), "group.id": f"streamer-models-{uuid.uuid4().hex[:12]}",
                     "enable.auto.commit": False, "enable.auto.offset.store": False,
                     "auto.offset.reset": "earliest"})


class ModelFollower:
    """Follows ``topics.models`` for one model name: :meth:`catch_up` reads what is there, then
    :meth:`poll` (non-blocking) returns the newest announcement that arrived since the last call."""

    def __init__(self, cfg: StreamerConfig) -> None:
        self.cfg = cfg
        self.name = cfg.model.name
        self.topic = cfg.topics.models
        ensure_models_topic(cfg)
        self._consumer = _models_consumer(cfg)
        md = self._consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
        if md is None or md.error is not None:
            raise BrokerError(f"models topic {self.topic!r} unavailable: {md.error if md else 'missing'}")
        self._parts = [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in sorted(md.partitions)]
        self._consumer.assign(self._parts)
        self._pos: dict[int, int] = {}
        self.bad = 0  # records that were not announcements

    def _take(self, msgs: list[Any]) -> Announcement | None:
        newest = None
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("models topic %s: %s", self.topic, err)
                continue
            self._pos[m.partition()] = m.offset()
            key = m.key().decode("utf-8", "replace") if m.key() else ""
            if key != self.name:
                continue
            if m.value() is None:
                continue  # tombstone: nothing to follow
            try:
                newest = Announcement.from_bytes(m.value())
            except AnnouncementError as exc:
                self.bad += 1
                log.warning("models topic %s offset %d: ignored: %s", self.topic, m.offset(), exc)
        return newest

    def catch_up(self, timeout_s: float = 30.0) -> Announcement | None:
        """Read up to the current end of the topic; the newest announcement of the model, if any."""
        ends = {}
        for tp in self._parts:
            lo, hi = self._consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)
            ends[tp.partition] = hi
        newest = None
        deadline = time.monotonic() + timeout_s
        while any(self._pos.get(p, -1) + 1 < hi for p, hi in ends.items()):
            if time.monotonic() > deadline:
                raise BrokerError(f"timed out reading the models topic {self.topic!r}")
            got = self._take(self._consumer.consume(500, timeout=0.5))
            newest = got or newest
        return newest

    def poll(self) -> Announcement | None:
        """The newest announcement that arrived since the last call (None: nothing new)."""
        newest = None
        while True:
            msgs = self._consumer.consume(500, timeout=0)
            if not msgs:
                return newest
            newest = self._take(msgs) or newest

    def close(self) -> None:
        self._consumer.close()


def read_announcements(cfg: StreamerConfig) -> list[Announcement]:
    """Every announcement of ``model.name`` still on the topic, oldest first (compaction keeps at
    least the newest). With ``model.hmac_key`` set, those whose signature fails are left out."""
    from streamer.kafka_io import read_topic_to_end

    ensure_models_topic(cfg)
    out = []
    for r in read_topic_to_end(cfg.kafka, cfg.topics.models):
        if r.value is None:
            continue  # tombstone
        try:
            ann = Announcement.from_bytes(r.value)
        except AnnouncementError:
            continue
        if ann.name != cfg.model.name:
            continue
        try:
            verify(ann, cfg.model.hmac_key)
        except SignatureError as exc:
            log.warning("%s", exc)
            continue
        out.append((r.partition, r.offset, ann))
    return [a for _, _, a in sorted(out, key=lambda t: (t[0], t[1]))]


def latest_announcement(cfg: StreamerConfig) -> Announcement | None:
    anns = read_announcements(cfg)
    return anns[-1] if anns else None


# -- by hand: list, show, promote, rollback ----------------------------------------------------
def store_versions(cfg: StreamerConfig) -> list[dict[str, Any]]:
    """Every version on disk, oldest first: published store versions and rejected candidates, with
    their card's figures (nothing is loaded but JSON)."""
    from streamer.artifact import list_versions

    root = Path(cfg.model.dir) / cfg.model.name
    rows = []
    for status, base in (("stored", root), ("rejected", rejected_dir(cfg))):
        for v in list_versions(base.parent, base.name):
            try:
                card = orjson.loads((base / v / "card.json").read_bytes())
            except (OSError, orjson.JSONDecodeError):
                card = {}
            gate = card.get("gate") or {}
            rows.append({
                "version": v, "status": status, "path": str(base / v), "created_at": card.get("created_at", ""),
                "source": card.get("source", ""), "windows": (card.get("data") or {}).get("windows"),
                "false_alarm_rate_heldout": (card.get("validation") or {}).get("false_alarm_rate_heldout"),
                "gate": None if not gate else ("passed" if gate.get("passed") else "failed"),
                "gate_reasons": gate.get("reasons", []),
            })
    return sorted(rows, key=lambda r: r["version"])


def promote(cfg: StreamerConfig, version: str, *, action: str = "promote",
            history: list[str] | None = None) -> Announcement:
    """Announce ``version`` by hand. A rejected candidate is moved into the store first (a person
    overrode the gate). The artifact is verified (every checksum) before it is announced."""
    from streamer.artifact import verify_artifact_dir

    path = find_version_dir(cfg, version)
    if path is None:
        raise ArtifactError(f"no version {version!r} of model {cfg.model.name!r} under {cfg.model.dir}/ "
                            "(see `streamer models list`)")
    verify_artifact_dir(path)
    if path.parent.name == REJECTED:
        dest = Path(cfg.model.dir) / cfg.model.name / version
        os.replace(path, dest)
        log.warning("version %s was rejected by the gate; promoted by hand, moved to %s", version, dest)
        path = dest
    if history is None:
        latest = latest_announcement(cfg)
        history = latest.history if latest is not None else []
    return publish(cfg, announcement_for(cfg, path, action=action, history=history, by="cli"))


def rollback(cfg: StreamerConfig) -> Announcement:
    """Announce the version announced before the current one (the history of the newest
    announcement, which survives compaction)."""
    latest = latest_announcement(cfg)
    if latest is None:
        raise ArtifactError(f"nothing announced yet for model {cfg.model.name!r} on {cfg.topics.models}")
    hist = [v for v in latest.history if v] or [latest.version]
    if hist[-1] != latest.version:
        hist.append(latest.version)
    if len(hist) < 2:
        raise ArtifactError(f"no earlier announced version of {cfg.model.name!r} to roll back to "
                            f"(only {latest.version})")
    return promote(cfg, hist[-2], action="rollback", history=hist[:-1])
