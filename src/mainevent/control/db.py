"""SQL schema, engines and migrations of the control plane (SQLite by default, PostgreSQL by URL).

Writes on SQLite run in ``BEGIN IMMEDIATE`` transactions (one writer at a time, readers go on in
WAL mode) so that read-then-write transactions never fail with "database is locked" when they
race; PostgreSQL relies on row locks, unique constraints and conditional updates instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, ClassVar

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    DateTime,
    Engine,
    Float,
    Integer,
    String,
    UniqueConstraint,
    create_engine,
    event,
    make_url,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

__all__ = [
    "Account",
    "AuditEntry",
    "Base",
    "ConsoleSessionRow",
    "Database",
    "EventRow",
    "HighlightRow",
    "IdempotencyRecord",
    "Purchase",
    "open_database",
]

_MIGRATIONS = Path(__file__).with_name("migrations")


class Base(DeclarativeBase):
    """Declarative base of every control-plane table."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        datetime: DateTime(timezone=True),
    }


class EventRow(Base):
    """One event; everything but id, status and schedule lives in the JSON ``spec``."""

    __tablename__ = "events"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)
    starts_at: Mapped[datetime | None]
    ends_at: Mapped[datetime | None]
    spec: Mapped[dict[str, Any]]
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class AuditEntry(Base):
    """One operator action: who, what, when, and the target before and after."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str] = mapped_column(String(64), index=True)
    before: Mapped[dict[str, Any] | None]
    after: Mapped[dict[str, Any] | None]
    idempotency_key: Mapped[str | None] = mapped_column(String(128))


class IdempotencyRecord(Base):
    """The stored answer to a mutating call, replayed when the same key is sent again."""

    __tablename__ = "idempotency_keys"
    actor: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(300))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]]
    etag: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]


class Account(Base):
    """A viewer account: where it lives, how old its holder is, what plan it has and until when."""

    __tablename__ = "accounts"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    country: Mapped[str | None] = mapped_column(String(32))
    date_of_birth: Mapped[date | None] = mapped_column(Date)
    plan: Mapped[str | None] = mapped_column(String(64))
    plan_valid_until: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime]


class Purchase(Base):
    """A pay-per-view purchase; (account, idempotency key) is unique so a retry never charges twice."""

    __tablename__ = "purchases"
    __table_args__ = (
        UniqueConstraint("account_id", "idempotency_key", name="uq_purchase_idempotency"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(128), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(128))
    event_id: Mapped[str] = mapped_column(String(64))
    product_id: Mapped[str] = mapped_column(String(64))
    amount_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))
    provider_ref: Mapped[str | None] = mapped_column(String(128))
    failure: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class HighlightRow(Base):
    """An operator-marked point (no ``ends_at``) or range of an event, in capture time."""

    __tablename__ = "highlights"
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    event_id: Mapped[str] = mapped_column(String(64), index=True)
    title: Mapped[str] = mapped_column(String(200))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(64))


class ConsoleSessionRow(Base):
    """A signed-in console operator, by the SHA-256 of the session id in their cookie."""

    __tablename__ = "console_sessions"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    actor: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float(precision=53))
    """Epoch seconds (the console's clock, as the session value carries it)."""
    expires_at: Mapped[float] = mapped_column(Float(precision=53), index=True)


def utcnow() -> datetime:
    """Aware UTC now (only adapters call this; rules take ``now`` as a parameter)."""
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes: they were stored as UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Database:
    """Engines and session factories: ``write`` for transactions that change rows, ``read`` for lookups."""

    url: str
    write_engine: Engine
    read_engine: Engine
    write: sessionmaker[Any]
    read: sessionmaker[Any]

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()


def _sqlite_engine(url: str, *, immediate: bool) -> Engine:
    # A pool of connections shared by worker threads: opening SQLite and setting its pragmas
    # costs more than the lookups made on the hot path.
    engine = create_engine(
        url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=8, max_overflow=32
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def open_database(url: str, *, migrate: bool = True) -> Database:
    """Connect to ``url`` and (by default) bring its schema to the newest migration."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        write_engine = _sqlite_engine(url, immediate=True)
        read_engine = _sqlite_engine(url, immediate=False)
    else:
        write_engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
        read_engine = write_engine
    db = Database(
        url,
        write_engine,
        read_engine,
        sessionmaker(write_engine, expire_on_commit=False),
        sessionmaker(read_engine, expire_on_commit=False),
    )
    if migrate:
        upgrade(db)
    return db


def alembic_config(db: Database) -> Config:
    """Alembic configuration pointing at the packaged migrations."""
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    return cfg


def upgrade(db: Database, revision: str = "head") -> None:
    """Apply migrations up to ``revision``."""
    cfg = alembic_config(db)
    with db.write_engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        conn.commit()
