"""rosbag2 files through `rosbags`, with errors that name the file and the topic.

Messages stay raw CDR bytes end to end (read, publish, record, write) so a replay is bit-exact;
they are deserialized with the installed rclpy message classes only where a tool looks inside.
"""

from __future__ import annotations

import functools
import importlib
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

STORAGES = ("sqlite3", "mcap")
VERSIONS = (8, 9)
DEFAULT_VERSION = 9
DEFAULT_DEPTH = 10

_DISTRO_STORES = {
    "humble": "ROS2_HUMBLE",
    "iron": "ROS2_IRON",
    "jazzy": "ROS2_JAZZY",
    "kilted": "ROS2_KILTED",
}


class BagError(ValueError):
    """A bag that cannot be read, written or replayed; the message names the file or topic."""


@dataclass(frozen=True)
class BagMessage:
    """One stored message: bag (receive) time in ns and the CDR bytes as recorded."""

    topic: str
    msgtype: str
    timestamp_ns: int
    data: bytes


@dataclass(frozen=True)
class TopicInfo:
    """A topic as the bag describes it; `offered_qos` holds `rosbags.interfaces.Qos` tuples."""

    name: str
    msgtype: str
    count: int
    digest: str = ""
    offered_qos: tuple[Any, ...] = ()


@dataclass(frozen=True)
class BagInfo:
    """Bag-level facts for `bag info`, the replay progress bar and reports."""

    path: Path
    storage: str
    version: int | None
    ros_distro: str | None
    start_ns: int
    end_ns: int
    count: int
    topics: tuple[TopicInfo, ...]
    custom_data: dict[str, str] = field(default_factory=dict)
    zero_stamped: int = 0
    """Messages recorded at time 0 (a sim-time recorder before the first /clock); `start_ns` is
    the first other time, so they never stretch the duration to the epoch's 1.7e9 s."""

    @property
    def duration_s(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e9

    @property
    def time_note(self) -> str:
        """What `bag info` and reports add after the duration; empty for a sound bag."""
        if not self.zero_stamped:
            return ""
        return f", {self.zero_stamped} messages stamped 0 (recorded before the first /clock?)"

    def topic(self, name: str) -> TopicInfo:
        for info in self.topics:
            if info.name == name:
                return info
        raise BagError(f"{self.path}: no topic {name!r} (has {[t.name for t in self.topics]})")


class BagReader:
    """Read-only access to a rosbag2 directory (or a bare .db3 / .mcap file).

    Every failure of the underlying storage surfaces as `BagError` naming the path, including
    corruption found only while iterating.
    """

    def __init__(self, path: str | Path) -> None:
        from rosbags.rosbag2 import Reader

        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"bag {self.path} does not exist")
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except FileNotFoundError as exc:
            raise BagError(f"{self.path}: not a rosbag2 bag ({exc})") from exc
        except Exception as exc:  # rosbags, apsw and the mcap parser raise many unrelated types
            raise BagError(
                f"{self.path}: cannot open bag{_files(self.path)}: {type(exc).__name__}: {exc}"
            ) from exc
        self._metadata = _read_metadata(self.path)

    def __enter__(self) -> BagReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._reader.is_open:
            self._reader.close()

    def info(self) -> BagInfo:
        reader = self._reader
        topics = []
        for name, topic in sorted(reader.topics.items()):
            first = topic.connections[0]
            topics.append(
                TopicInfo(
                    name=name,
                    msgtype=topic.msgtype or first.msgtype,
                    count=topic.msgcount,
                    digest=first.digest or "",
                    offered_qos=tuple(getattr(first.ext, "offered_qos_profiles", ()) or ()),
                )
            )
        storage = self._metadata.get("storage_identifier") or (
            "mcap" if self.path.suffix == ".mcap" else "sqlite3"
        )
        custom = self._metadata.get("custom_data") or {}
        start = reader.start_time if reader.message_count else 0
        end = reader.end_time if reader.message_count else 0
        zero = 0
        if reader.message_count and start == 0:
            times = [timestamp for _, timestamp, _ in reader.messages()]
            zero = times.count(0)
            start = min((t for t in times if t), default=0)
            end = end if start else 0
        return BagInfo(
            path=self.path,
            storage=str(storage),
            version=self._metadata.get("version"),
            ros_distro=self._metadata.get("ros_distro") or None,
            start_ns=start,
            end_ns=end,
            count=reader.message_count,
            topics=tuple(topics),
            custom_data={str(k): str(v) for k, v in custom.items()},
            zero_stamped=zero,
        )

    def messages(
        self,
        topics: Iterable[str] | None = None,
        start_ns: int | None = None,
        stop_ns: int | None = None,
    ) -> Iterator[BagMessage]:
        """Messages in bag-time order; `topics=None` means all."""
        wanted = None if topics is None else set(topics)
        if wanted is not None:
            missing = wanted - set(self._reader.topics)
            if missing:
                raise BagError(
                    f"{self.path}: no topic(s) {sorted(missing)} "
                    f"(bag has {sorted(self._reader.topics)})"
                )
            if not wanted:
                return
        connections = [c for c in self._reader.connections if wanted is None or c.topic in wanted]
        count = 0
        iterator = self._reader.messages(connections, start=start_ns, stop=stop_ns)
        while True:
            try:
                connection, timestamp, data = next(iterator)
            except StopIteration:
                return
            except Exception as exc:  # storage back ends raise many unrelated types
                where = f"{self.path}{_files(self.path)}"
                raise BagError(
                    f"{where}: corrupt bag, failed after {count} message(s): "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            count += 1
            yield BagMessage(connection.topic, connection.msgtype, int(timestamp), bytes(data))


def _files(path: Path) -> str:
    """' (storage files a.db3, b.db3)' for error messages about a bag directory."""
    names = _read_metadata(path).get("relative_file_paths") if path.is_dir() else None
    if not isinstance(names, list) or not names:
        return ""
    return f" (storage files {', '.join(str(n) for n in names)})"


def _read_metadata(path: Path) -> dict[str, Any]:
    meta = path / "metadata.yaml"
    if not meta.is_file():
        return {}
    try:
        raw = yaml.safe_load(meta.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    info = raw.get("rosbag2_bagfile_information") if isinstance(raw, dict) else None
    return info if isinstance(info, dict) else {}


def bag_info(path: str | Path) -> BagInfo:
    with BagReader(path) as reader:
        return reader.info()


def read_messages(path: str | Path, topics: Iterable[str] | None = None) -> list[BagMessage]:
    """Whole bag in memory: for tests and small run bags, never for long camera recordings."""
    with BagReader(path) as reader:
        return list(reader.messages(topics))


@functools.lru_cache(maxsize=1)
def typestore() -> Any:
    """Message definitions for writing bags: the running distro's, Kilted when unknown."""
    from rosbags.typesys import Stores, get_typestore

    distro = os.environ.get("ROS_DISTRO", "").lower()
    return get_typestore(getattr(Stores, _DISTRO_STORES.get(distro, "ROS2_KILTED")))


def message_definition(msgtype: str, digest: str | None = None) -> tuple[str, str]:
    """(.msg definition text, RIHS01 hash) for the bag's type records.

    A live type hash from the graph wins over the typestore's; a type the typestore does not know
    gets an empty definition, as rosbag2 writes when it cannot find the .msg files.
    """
    from rosbags.typesys import TypesysError

    store = typestore()
    try:
        definition, _ = store.generate_msgdef(msgtype, ros_version=2)
        known_digest = store.hash_rihs01(msgtype)
    except (TypesysError, KeyError):
        definition, known_digest = "", ""
    digest = digest if digest and digest.startswith("RIHS01_") else known_digest
    if not digest:
        raise BagError(f"no message definition or type hash known for {msgtype!r}")
    return definition, digest


@functools.lru_cache(maxsize=64)
def _import_class(msgtype: str) -> type:
    parts = msgtype.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ImportError(f"malformed type name {msgtype!r}")
    package, kind, name = parts
    module = importlib.import_module(f"{package}.{kind}")
    return getattr(module, name)


def message_class(msgtype: str, topic: str | None = None) -> type:
    """The installed rclpy message class for `pkg/msg/Type`, or a BagError naming the topic."""
    try:
        return _import_class(msgtype)
    except (ImportError, AttributeError) as exc:
        where = f"topic {topic!r}: " if topic else ""
        raise BagError(
            f"{where}message type {msgtype!r} is not available in this Python environment "
            f"({exc}); install its interface package or leave the topic out (--topics)"
        ) from exc


def serialize(msg: Any, msgtype: str | None = None) -> bytes:
    """CDR bytes of an rclpy message; with `msgtype`, reproducible ones.

    rclpy leaves CDR alignment padding uninitialised, so the same message can serialize to
    different bytes. Passing the type name re-encodes through the `rosbags` serializer, which
    zeroes padding: that is what makes synthetic bags byte-identical for a seed.
    """
    from rclpy.serialization import serialize_message

    data = bytes(serialize_message(msg))
    if msgtype is None:
        return data
    store = typestore()
    return bytes(store.serialize_cdr(store.deserialize_cdr(data, msgtype), msgtype))


def deserialize(data: bytes, msgtype: str, topic: str | None = None) -> Any:
    """CDR bytes to an rclpy message; malformed bytes become a BagError naming the topic."""
    from rclpy.serialization import deserialize_message

    cls = message_class(msgtype, topic)
    try:
        return deserialize_message(data, cls)
    except Exception as exc:  # the C deserializer raises RuntimeError or worse on garbage
        raise BagError(f"topic {topic or msgtype!r}: cannot deserialize {msgtype}: {exc}") from exc


def stamp_ns(msg: Any) -> int | None:
    """Header stamp (or a Header / Clock message's own time) in ns; None when there is none."""
    for holder in (getattr(msg, "header", None), msg):
        stamp = getattr(holder, "stamp", None) or getattr(holder, "clock", None)
        if stamp is not None and hasattr(stamp, "sec") and hasattr(stamp, "nanosec"):
            return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    return None


def qos_to_offered(profile: Any) -> Any:
    """An rclpy QoSProfile as the `rosbags` Qos tuple stored in the bag's topic metadata."""
    from rosbags.interfaces import (
        Qos,
        QosDurability,
        QosHistory,
        QosLiveliness,
        QosReliability,
        QosTime,
    )

    def time(duration: Any) -> Any:
        nanoseconds = int(getattr(duration, "nanoseconds", 0))
        if nanoseconds >= 2**63 - 1:
            return QosTime(2147483647, 4294967295)
        return QosTime(nanoseconds // 1_000_000_000, nanoseconds % 1_000_000_000)

    def enum(kind: Any, value: Any) -> Any:
        try:
            return kind(int(value))
        except ValueError:
            return kind.UNKNOWN

    return Qos(
        enum(QosHistory, profile.history),
        int(profile.depth),
        enum(QosReliability, profile.reliability),
        enum(QosDurability, profile.durability),
        time(profile.deadline),
        time(profile.lifespan),
        enum(QosLiveliness, profile.liveliness),
        time(profile.liveliness_lease_duration),
        bool(profile.avoid_ros_namespace_conventions),
    )


def adapt_qos(offered: Sequence[Any], default_depth: int = DEFAULT_DEPTH) -> Any:
    """One rclpy profile that talks to whatever the recorded publishers talked to.

    Reliable only if every recorded publisher was reliable, transient-local only if every one
    was; anything unknown falls back to reliable/volatile (the ROS default).
    """
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    if not offered:
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=default_depth)
    reliabilities = {_enum_name(q.reliability) for q in offered}
    durabilities = {_enum_name(q.durability) for q in offered}
    if reliabilities <= {"RELIABLE"}:
        reliability = ReliabilityPolicy.RELIABLE
    elif reliabilities <= {"RELIABLE", "BEST_EFFORT"}:
        reliability = ReliabilityPolicy.BEST_EFFORT
    else:
        reliability = ReliabilityPolicy.RELIABLE
    durability = (
        DurabilityPolicy.TRANSIENT_LOCAL
        if durabilities <= {"TRANSIENT_LOCAL"}
        else DurabilityPolicy.VOLATILE
    )
    depths = [int(q.depth) for q in offered if _enum_name(q.history) == "KEEP_LAST" and q.depth > 0]
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=max(depths) if depths else default_depth,
        reliability=reliability,
        durability=durability,
    )


def _enum_name(value: Any) -> str:
    return str(getattr(value, "name", value)).upper()


class BagWriter:
    """Writes a rosbag2 that `ros2 bag` and `rosbags` both read.

    Not thread-safe and thread-affine (sqlite3): open, write and close from one thread.
    Leaving the `with` block for any reason, Ctrl-C included, closes the bag properly so that
    everything written so far stays readable.
    """

    def __init__(
        self,
        path: str | Path,
        storage: str = "sqlite3",
        version: int = DEFAULT_VERSION,
        overwrite: bool = False,
    ) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

        if storage not in STORAGES:
            raise BagError(f"storage must be one of {list(STORAGES)}, got {storage!r}")
        if version not in VERSIONS:
            raise BagError(f"rosbag2 metadata version must be one of {list(VERSIONS)}")
        self.path = Path(path)
        if self.path.exists():
            if not overwrite:
                raise BagError(f"{self.path} exists already (use --overwrite to replace it)")
            _remove_bag(self.path)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=version, storage_plugin=plugin)  # type: ignore
        try:
            self._writer.open()
        except (WriterError, OSError) as exc:
            raise BagError(f"{self.path}: cannot create bag: {exc}") from exc
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self._closed = False

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def add_topic(
        self,
        topic: str,
        msgtype: str,
        offered_qos: Sequence[Any] = (),
        digest: str | None = None,
    ) -> None:
        """Declare a topic; `offered_qos` takes rclpy QoSProfiles or `rosbags` Qos tuples."""
        if topic in self._connections:
            return
        definition, rihs01 = message_definition(msgtype, digest)
        profiles = [q if hasattr(q, "_fields") else qos_to_offered(q) for q in offered_qos]
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, msgdef=definition, rihs01=rihs01, offered_qos_profiles=profiles
        )
        self.counts[topic] = 0

    def write(self, topic: str, timestamp_ns: int, data: bytes) -> None:
        connection = self._connections.get(topic)
        if connection is None:
            raise BagError(f"{self.path}: topic {topic!r} was not added before writing")
        self._writer.write(connection, int(timestamp_ns), data)
        self.counts[topic] += 1

    def set_custom_data(self, key: str, value: str) -> None:
        self._writer.set_custom_data(key, value)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._writer.close()
        except BaseException:
            self._writer.abort()
            raise


def _remove_bag(path: Path) -> None:
    """Only ever deletes an empty directory or one that holds a rosbag2 (metadata.yaml)."""
    if path.is_dir() and (not any(path.iterdir()) or (path / "metadata.yaml").is_file()):
        shutil.rmtree(path)
        return
    raise BagError(f"refusing to overwrite {path}: it is not a rosbag2 directory")
