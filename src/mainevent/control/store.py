"""SQL repositories of the control plane: events, audit log, idempotency, accounts, purchases.

Every method is synchronous (SQLAlchemy sessions); the HTTP layer runs them in worker threads.
Mutations record their audit entry and idempotency answer in the same transaction as the change.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mainevent.control.db import (
    Account,
    AuditEntry,
    Database,
    EventRow,
    IdempotencyRecord,
    Purchase,
    as_utc,
    utcnow,
)
from mainevent.control.entitlement import Blackout, EventFacts, Policy, ViewerFacts
from mainevent.control.errors import Conflict, NotFound, PreconditionFailed, invalid_request
from mainevent.control.lifecycle import TRANSITIONS, EventStatus, check_transition
from mainevent.control.schemas import (
    AccountIn,
    AccountOut,
    AuditOut,
    EventCreate,
    EventOut,
    EventSpecFields,
    EventUpdate,
    PurchaseOut,
)

__all__ = ["Actor", "ControlStore", "Mutation", "etag_of", "request_hash"]

_VIEWER_SQL = (
    "SELECT a.id, a.country, a.date_of_birth, a.plan, a.plan_valid_until, p.product_id "
    "FROM accounts a LEFT JOIN purchases p ON p.account_id = a.id AND p.status = 'paid' "
    "WHERE a.id = ?"
)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is calling: an operator key's name and role, or a viewer account (role ``viewer``)."""

    name: str
    role: str


@dataclass(frozen=True, slots=True)
class Mutation:
    """The answer to a mutating call, as first sent and as replayed for the same Idempotency-Key."""

    status: int
    body: dict[str, Any]
    etag: str | None = None
    replayed: bool = False


def etag_of(version: int) -> str:
    """Strong ETag of a versioned resource."""
    return f'"{version}"'


def request_hash(method: str, path: str, body: bytes) -> str:
    """Fingerprint of a request, to refuse an Idempotency-Key reused for a different request."""
    h = hashlib.sha256(f"{method} {path}\n".encode())
    h.update(body)
    return h.hexdigest()


def _check_if_match(if_match: str | None, version: int) -> None:
    if if_match is None:
        return
    tags = {t.strip().removeprefix("W/") for t in if_match.split(",")}
    if "*" in tags or etag_of(version) in tags:
        return
    raise PreconditionFailed(
        "etag_mismatch",
        f"the resource changed (now at ETag {etag_of(version)}); read it again and reapply your change",
        details={"current_etag": etag_of(version)},
    )


def _ts(value: datetime | None) -> float | None:
    value = as_utc(value)
    return value.timestamp() if value is not None else None


def _iso_ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def event_out(row: EventRow) -> EventOut:
    """API view of an event row."""
    status = EventStatus(row.status)
    return EventOut.model_validate(
        dict(
            row.spec,
            id=row.id,
            title=row.title,
            status=status,
            starts_at=as_utc(row.starts_at),
            ends_at=as_utc(row.ends_at),
            version=row.version,
            allowed_transitions=sorted(TRANSITIONS[status], key=list(EventStatus).index),
            created_at=as_utc(row.created_at) or row.created_at,
            updated_at=as_utc(row.updated_at) or row.updated_at,
        ),
        context={"stored": True},
    )


def event_facts(row: EventRow) -> EventFacts:
    """What the playback rules need from an event row."""
    spec = row.spec
    policy = spec.get("policy", {})
    return EventFacts(
        id=row.id,
        status=EventStatus(row.status),
        starts_at=_ts(row.starts_at),
        ends_at=_ts(row.ends_at),
        allowed_regions=frozenset(spec.get("allowed_regions", ())),
        blackouts=tuple(
            Blackout(
                frozenset(b["regions"]), _iso_ts(b.get("starts_at")), _iso_ts(b.get("ends_at"))
            )
            for b in spec.get("blackouts", ())
        ),
        policy=Policy(
            subscription_tiers=frozenset(policy.get("subscription_tiers", ())),
            ppv_product=policy.get("ppv_product"),
            ppv_price_cents=policy.get("ppv_price_cents"),
            currency=policy.get("currency", "USD"),
            min_age=policy.get("min_age"),
            max_streams=policy.get("max_streams", 2),
        ),
        cdns=tuple(spec.get("cdns", ("origin",))),
        latency_mode=spec.get("latency_mode", "low"),
        dvr_window_s=spec.get("dvr_window_s", 0),
        segment_duration_ms=spec.get("segment_duration_ms", 2000),
    )


def _dump(model: BaseModel) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(model.model_dump_json())
    return data


def _audit_out(r: AuditEntry) -> AuditOut:
    return AuditOut(
        id=r.id,
        at=as_utc(r.at) or r.at,
        actor=r.actor,
        role=r.role,
        action=r.action,
        target_type=r.target_type,
        target_id=r.target_id,
        before=r.before,
        after=r.after,
        idempotency_key=r.idempotency_key,
    )


def _account_out(row: Account) -> AccountOut:
    return AccountOut(
        id=row.id,
        country=row.country,
        date_of_birth=row.date_of_birth,
        plan=row.plan,
        plan_valid_until=as_utc(row.plan_valid_until),
        version=row.version,
        updated_at=as_utc(row.updated_at) or row.updated_at,
    )


def _purchase_out(row: Purchase) -> PurchaseOut:
    return PurchaseOut(
        id=row.id,
        account_id=row.account_id,
        event_id=row.event_id,
        product_id=row.product_id,
        amount_cents=row.amount_cents,
        currency=row.currency,
        status=row.status,  # type: ignore[arg-type]
        failure=row.failure,
    )


class ControlStore:
    """Repositories over one :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- idempotency ----------------------------------------------------------------------------

    def idempotent(
        self,
        actor: Actor,
        key: str,
        method: str,
        path: str,
        fingerprint: str,
        apply: Callable[[Session], Mutation],
    ) -> Mutation:
        """Run ``apply`` once per (actor, key); later calls replay the stored answer."""
        with self.db.read() as s:
            record = s.get(IdempotencyRecord, (actor.name, key))
            if record is not None:
                return self._replay(record, fingerprint)
        try:
            with self.db.write.begin() as s:
                record = s.get(IdempotencyRecord, (actor.name, key))
                if record is not None:
                    return self._replay(record, fingerprint)
                result = apply(s)
                s.add(
                    IdempotencyRecord(
                        actor=actor.name,
                        key=key,
                        method=method,
                        path=path[:300],
                        request_hash=fingerprint,
                        status_code=result.status,
                        response=result.body,
                        etag=result.etag,
                        created_at=utcnow(),
                    )
                )
                s.flush()
                return result
        except IntegrityError:
            # A concurrent call with the same key won the race (PostgreSQL): answer as it did.
            with self.db.read() as s:
                record = s.get(IdempotencyRecord, (actor.name, key))
                if record is not None:
                    return self._replay(record, fingerprint)
            raise Conflict(
                "concurrent_change", "another request changed this resource at the same time; retry"
            ) from None

    @staticmethod
    def _replay(record: IdempotencyRecord, fingerprint: str) -> Mutation:
        if record.request_hash != fingerprint:
            raise Conflict(
                "idempotency_key_reused",
                "this Idempotency-Key was already used for a different request; use a new key",
                status=422,
            )
        return Mutation(record.status_code, record.response, record.etag, replayed=True)

    @staticmethod
    def _audit(
        s: Session,
        actor: Actor,
        action: str,
        target_type: str,
        target_id: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        key: str | None,
    ) -> None:
        s.add(
            AuditEntry(
                at=utcnow(),
                actor=actor.name,
                role=actor.role,
                action=action,
                target_type=target_type,
                target_id=target_id,
                before=before,
                after=after,
                idempotency_key=key,
            )
        )

    def record(
        self,
        s: Session,
        actor: Actor,
        action: str,
        target_type: str,
        target_id: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        key: str | None,
    ) -> None:
        """One audit entry in ``s``, for changes whose state lives outside the database
        (steering overrides)."""
        self._audit(s, actor, action, target_type, target_id, before, after, key)

    # -- events ---------------------------------------------------------------------------------

    def create_event(
        self, s: Session, actor: Actor, body: EventCreate, key: str | None
    ) -> Mutation:
        """Insert a draft event (inside an idempotent transaction)."""
        if s.get(EventRow, body.id) is not None:
            raise Conflict(
                "event_exists", f"an event with id {body.id!r} already exists; choose another id"
            )
        spec = _dump(
            EventSpecFields.model_validate(
                body.model_dump(include=set(EventSpecFields.model_fields))
            )
        )
        now = utcnow()
        row = EventRow(
            id=body.id,
            title=body.title,
            status=EventStatus.DRAFT.value,
            starts_at=body.starts_at,
            ends_at=body.ends_at,
            spec=spec,
            version=1,
            created_at=now,
            updated_at=now,
        )
        s.add(row)
        s.flush()
        out = _dump(event_out(row))
        self._audit(s, actor, "event.create", "event", row.id, None, out, key)
        return Mutation(201, out, etag_of(row.version))

    def get_event(self, event_id: str) -> EventOut:
        """One event, or NotFound."""
        with self.db.read() as s:
            row = s.get(EventRow, event_id)
            if row is None:
                raise NotFound("event_not_found", f"no event {event_id!r}")
            return event_out(row)

    def event_facts(self, event_id: str) -> EventFacts | None:
        """Playback view of an event, or None if it does not exist."""
        with self.db.read() as s:
            row = s.get(EventRow, event_id)
            return event_facts(row) if row is not None else None

    def list_events(self, status: EventStatus | None = None, limit: int = 100) -> list[EventOut]:
        """Events by start time (unscheduled last)."""
        with self.db.read() as s:
            q = select(EventRow).order_by(EventRow.starts_at, EventRow.id).limit(limit)
            if status is not None:
                q = q.where(EventRow.status == status.value)
            return [event_out(r) for r in s.scalars(q)]

    def _locked_event(self, s: Session, event_id: str) -> EventRow:
        row = s.execute(
            select(EventRow).where(EventRow.id == event_id).with_for_update()
        ).scalar_one_or_none()
        if row is None:
            raise NotFound("event_not_found", f"no event {event_id!r}")
        return row

    def update_event(
        self,
        s: Session,
        actor: Actor,
        event_id: str,
        patch: EventUpdate,
        if_match: str | None,
        key: str | None,
    ) -> Mutation:
        """Change the given fields; refuses archived events and stale ETags."""
        row = self._locked_event(s, event_id)
        _check_if_match(if_match, row.version)
        if row.status == EventStatus.ARCHIVED:
            raise Conflict(
                "event_archived", f"event {event_id!r} is archived and can no longer change"
            )
        before = _dump(event_out(row))
        changes = patch.model_dump(exclude_unset=True)
        try:
            merged = EventCreate.model_validate(
                {k: v for k, v in before.items() if k in EventCreate.model_fields}
                | {k: getattr(patch, k) for k in changes}
            )
        except ValidationError as exc:
            # The patch alone was valid; together with the stored fields it is not (e.g. ends_at
            # before the stored starts_at).
            raise invalid_request(exc.errors(), prefix=("body",)) from None
        if row.status != EventStatus.DRAFT and (merged.starts_at is None or merged.ends_at is None):
            raise Conflict(
                "schedule_missing", "a scheduled event must keep both starts_at and ends_at"
            )
        row.title = merged.title
        row.starts_at = merged.starts_at
        row.ends_at = merged.ends_at
        row.spec = _dump(
            EventSpecFields.model_validate(
                merged.model_dump(include=set(EventSpecFields.model_fields))
            )
        )
        row.version += 1
        row.updated_at = utcnow()
        s.flush()
        after = _dump(event_out(row))
        self._audit(s, actor, "event.update", "event", event_id, before, after, key)
        return Mutation(200, after, etag_of(row.version))

    def transition_event(
        self,
        s: Session,
        actor: Actor,
        event_id: str,
        target: EventStatus,
        if_match: str | None,
        key: str | None,
    ) -> Mutation:
        """Move an event along its lifecycle; illegal moves are Conflict with the reason."""
        row = self._locked_event(s, event_id)
        _check_if_match(if_match, row.version)
        current = EventStatus(row.status)
        illegal = check_transition(current, target, starts_at=row.starts_at, ends_at=row.ends_at)
        if illegal is not None:
            raise Conflict(
                illegal.reason,
                illegal.message,
                details={
                    "from": current.value,
                    "to": target.value,
                    "allowed": [a.value for a in illegal.allowed],
                },
            )
        before = _dump(event_out(row))
        row.status = target.value
        row.version += 1
        row.updated_at = utcnow()
        s.flush()
        after = _dump(event_out(row))
        self._audit(
            s, actor, f"event.transition.{target.value}", "event", event_id, before, after, key
        )
        return Mutation(200, after, etag_of(row.version))

    def command_event(
        self,
        s: Session,
        actor: Actor,
        event_id: str,
        command: str,
        spec_changes: dict[str, Any] | None,
        if_match: str | None,
        key: str | None,
        *,
        result: dict[str, Any] | None = None,
    ) -> Mutation:
        """An operator command on a running event: optional spec changes, a new version, and
        an `event.command.<command>` audit entry (`after.command_result` = what it did).
        Conflict `event_ended` once the event has ended."""
        row = self._locked_event(s, event_id)
        _check_if_match(if_match, row.version)
        if row.status in (EventStatus.ENDED, EventStatus.ARCHIVED):
            raise Conflict(
                "event_ended",
                f"event {event_id!r} is {row.status}: {command} no longer applies",
                details={"status": row.status, "command": command},
            )
        before = _dump(event_out(row))
        if spec_changes:
            row.spec = dict(row.spec) | spec_changes
        row.version += 1
        row.updated_at = utcnow()
        s.flush()
        after = _dump(event_out(row))
        logged = after | {"command_result": result} if result is not None else after
        self._audit(s, actor, f"event.command.{command}", "event", event_id, before, logged, key)
        return Mutation(200, after, etag_of(row.version))

    def latest_audit(self, target_id: str, action: str) -> AuditOut | None:
        """The newest audit entry of `action` on `target_id` (e.g. the last preflight)."""
        with self.db.read() as s:
            r = s.scalars(
                select(AuditEntry)
                .where(AuditEntry.target_id == target_id, AuditEntry.action == action)
                .order_by(AuditEntry.id.desc())
                .limit(1)
            ).one_or_none()
            return None if r is None else _audit_out(r)

    def audit(self, target_id: str | None = None, limit: int = 100) -> list[AuditOut]:
        """Newest audit entries first."""
        with self.db.read() as s:
            q = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
            if target_id is not None:
                q = q.where(AuditEntry.target_id == target_id)
            return [_audit_out(r) for r in s.scalars(q)]

    # -- accounts -------------------------------------------------------------------------------

    def put_account(
        self,
        s: Session,
        actor: Actor,
        account_id: str,
        body: AccountIn,
        if_match: str | None,
        key: str | None,
    ) -> Mutation:
        """Create or replace an account (plan changes included)."""
        row = s.execute(
            select(Account).where(Account.id == account_id).with_for_update()
        ).scalar_one_or_none()
        before = None
        if row is None:
            if if_match not in (None, "*"):
                raise PreconditionFailed("etag_mismatch", f"account {account_id!r} does not exist")
            row = Account(id=account_id, version=0)
            s.add(row)
        else:
            _check_if_match(if_match, row.version)
            before = _dump(_account_out(row))
        row.country = body.country
        row.date_of_birth = body.date_of_birth
        row.plan = body.plan
        row.plan_valid_until = body.plan_valid_until
        row.version += 1
        row.updated_at = utcnow()
        s.flush()
        after = _dump(_account_out(row))
        self._audit(s, actor, "account.put", "account", account_id, before, after, key)
        return Mutation(200 if before else 201, after, etag_of(row.version))

    def get_account(self, account_id: str) -> AccountOut:
        """One account, or NotFound."""
        with self.db.read() as s:
            row = s.get(Account, account_id)
            if row is None:
                raise NotFound("account_not_found", f"no account {account_id!r}")
            return _account_out(row)

    def load_viewer(self, account_id: str) -> ViewerFacts | None:
        """The entitlement facts of an account (the lookup the breaker protects).

        The hot path of a join storm: one pre-written statement on a pooled driver connection,
        skipping SQLAlchemy's statement building (which cost more than the query itself).
        """
        engine = self.db.read_engine
        mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        sql = _VIEWER_SQL.replace("?", mark)
        conn = engine.raw_connection()
        try:
            cur = conn.cursor()
            cur.execute(sql, (account_id,))
            rows = cur.fetchall()
            cur.close()
        finally:
            conn.close()
        if not rows:
            return None
        _id, country, born, plan, valid_until, _ = rows[0]
        if isinstance(born, str):
            born = date.fromisoformat(born)
        if isinstance(valid_until, str):
            valid_until = datetime.fromisoformat(valid_until)
        return ViewerFacts(
            account_id=account_id,
            country=country,
            date_of_birth=born,
            plan=plan,
            plan_valid_until=_ts(valid_until),
            purchased_products=frozenset(r[5] for r in rows if r[5] is not None),
        )

    # -- purchases ------------------------------------------------------------------------------

    def begin_purchase(
        self,
        account_id: str,
        key: str,
        event_id: str,
        product_id: str,
        amount_cents: int,
        currency: str,
        stale_after_s: float = 120.0,
    ) -> tuple[PurchaseOut, bool]:
        """Record a pending purchase, or find the one made with this key.

        Returns the purchase and whether this caller must charge it: True for a new purchase, one
        whose previous charge attempt errored, or one left ``pending`` for ``stale_after_s`` (its
        process died mid-charge). Re-charging is safe: the provider dedupes by the same key.
        """
        now = utcnow()
        try:
            with self.db.write.begin() as s:
                # One purchase decision at a time per account (the row lock queues concurrent
                # purchases with different keys on PostgreSQL; SQLite writes are serial anyway),
                # so two keys cannot both pass the ownership check below.
                s.execute(select(Account.id).where(Account.id == account_id).with_for_update())
                found = s.scalars(
                    select(Purchase).where(
                        Purchase.account_id == account_id, Purchase.idempotency_key == key
                    )
                ).one_or_none()
                if found is None:
                    self._refuse_owned(s, account_id, product_id)
                    row = Purchase(
                        id=str(uuid.uuid4()),
                        account_id=account_id,
                        idempotency_key=key,
                        event_id=event_id,
                        product_id=product_id,
                        amount_cents=amount_cents,
                        currency=currency,
                        status="pending",
                        created_at=now,
                        updated_at=now,
                    )
                    s.add(row)
                    s.flush()
                    return _purchase_out(row), True
        except IntegrityError:
            pass  # the same key raced us to the insert: continue as its retry
        with self.db.write.begin() as s:
            found = s.scalars(
                select(Purchase).where(
                    Purchase.account_id == account_id, Purchase.idempotency_key == key
                )
            ).one()
            if found.event_id != event_id:
                raise Conflict(
                    "idempotency_key_reused",
                    "this Idempotency-Key was already used for a different purchase; use a new key",
                    status=422,
                )
            if found.status == "error":  # about to be retaken: another key may have bought it since
                s.execute(select(Account.id).where(Account.id == account_id).with_for_update())
                self._refuse_owned(s, account_id, product_id, other_than=found.id)
            stale = now - timedelta(seconds=stale_after_s)
            claimed = s.execute(
                update(Purchase)
                .where(
                    Purchase.id == found.id,
                    or_(
                        Purchase.status == "error",
                        and_(Purchase.status == "pending", Purchase.updated_at < stale),
                    ),
                )
                .values(status="pending", updated_at=now)
                # The row is refreshed below; do not evaluate the criteria in Python (SQLite hands
                # back naive datetimes).
                .execution_options(synchronize_session=False)
            ).rowcount
            s.refresh(found)
            return _purchase_out(found), bool(claimed)

    @staticmethod
    def _refuse_owned(
        s: Session, account_id: str, product_id: str, other_than: str | None = None
    ) -> None:
        """Conflict if the account already bought (or is buying) the product with another key."""
        owned = s.scalars(
            select(Purchase)
            .where(
                Purchase.account_id == account_id,
                Purchase.product_id == product_id,
                Purchase.status.in_(("paid", "pending")),
                Purchase.id != (other_than or ""),
            )
            .order_by(Purchase.status.desc(), Purchase.created_at)  # "paid" before "pending"
            .limit(1)
        ).one_or_none()
        if owned is None:
            return
        existing = _dump(_purchase_out(owned))
        if owned.status == "paid":
            raise Conflict(
                "already_purchased",
                "this account already owns this product; nothing was charged",
                details={"purchase": existing},
            )
        raise Conflict(
            "purchase_in_progress",
            "another purchase of this product is still being processed for this account; retry shortly",
            retry_after=1,
            details={"purchase": existing},
        )

    def finish_purchase(
        self, purchase_id: str, status: str, provider_ref: str | None, failure: str | None
    ) -> PurchaseOut:
        """Store the payment outcome (paid, failed = declined, error = provider unavailable)."""
        with self.db.write.begin() as s:
            row = s.get(Purchase, purchase_id)
            if row is None:
                raise NotFound("purchase_not_found", f"no purchase {purchase_id!r}")
            row.status = status
            row.provider_ref = provider_ref
            row.failure = failure
            row.updated_at = utcnow()
            if status == "paid":
                self._audit(
                    s,
                    Actor(row.account_id, "viewer"),
                    "purchase.paid",
                    "purchase",
                    row.id,
                    None,
                    _dump(_purchase_out(row)),
                    row.idempotency_key,
                )
            s.flush()
            return _purchase_out(row)

    def get_purchase(self, purchase_id: str) -> PurchaseOut:
        """One purchase, or NotFound."""
        with self.db.read() as s:
            row = s.get(Purchase, purchase_id)
            if row is None:
                raise NotFound("purchase_not_found", f"no purchase {purchase_id!r}")
            return _purchase_out(row)


def epoch(dt: datetime) -> float:
    """Epoch seconds of an aware (or UTC-naive) datetime."""
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
