"""The tables, as SQLAlchemy 2 declarative models. Each table has one writing service:

- ``users``, ``projects``, ``artifacts``, ``understanding_sessions``: the founder-facing
  product (here: the gateway's admin and seed API); read by the context assembler and gateway;
- ``builds``, ``user_active_builds``: the gateway (creation, and the status projection of build
  events; the second counts each user's builds that have not ended, for the plan's limit);
- ``outbox``: the gateway (same transaction as the build row; its relay deletes what it sent);
- ``processed_events``: every consumer, for its own ``scope`` (``record_once``);
- ``agent_checkpoints``, ``build_versions``: the agent runner;
- ``budget_ledger``, ``budget_topups``: the budget service (the gateway reads them for usage).

One exception, kept from the monolith's behaviour: when a build completes, the agent runner moves
``projects.stage`` to ``mvp_built`` (the founder-facing product's "MVP built" transition). It is a
single guarded ``UPDATE`` whose failure is logged and not fatal.

The database is PostgreSQL (asyncpg); every ``DateTime`` is timezone-aware (``timestamptz``), so
what is read back is in UTC with its zone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from cofounder_runtime.idempotency_sql import metadata as runtime_metadata

__all__ = [
    "AgentCheckpoint",
    "Artifact",
    "Base",
    "BudgetLedgerRow",
    "Build",
    "BuildVersion",
    "CheckpointFence",
    "OutboxRow",
    "Project",
    "UnderstandingSession",
    "User",
    "all_metadata",
]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


#: The statuses of a build that has not ended, as SQL (the partial index's predicate).
UNFINISHED_SQL = "status in ('queued', 'assembling', 'running', 'sleeping', 'finishing')"


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base with constraint naming conventions (stable migration names)."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy's documented class attribute
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSON,
    }


class User(Base):
    """A founder. ``tier`` is one of the configured plans."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    tier: Mapped[str] = mapped_column(String(40), default="bootstrapper")
    suspended: Mapped[bool] = mapped_column(Boolean, default=False)
    suspension_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=_now)


class Project(Base):
    """A founder's project; ``stage`` moves to ``mvp_built`` when a build completes."""

    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    stage: Mapped[str] = mapped_column(String(40), default="understanding")
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)


class Artifact(Base):
    """A versioned document of a project, e.g. its ``idea_brief``."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("project_id", "artifact_type"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    artifact_type: Mapped[str] = mapped_column(String(60))
    current_content: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)


class UnderstandingSession(Base):
    """An interview: ``questions`` is ``[{"id", "text"}]``; ``answers`` maps ids to text."""

    __tablename__ = "understanding_sessions"
    __table_args__ = (
        Index("ix_understanding_sessions_project_created", "project_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    questions: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    answers: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=_now)


class Build(Base):
    """One build of a project. The gateway is its only writer (status via the projection)."""

    __tablename__ = "builds"
    __table_args__ = (
        UniqueConstraint("user_id", "idempotency_key"),
        Index("ix_builds_user_status", "user_id", "status"),
        # The reconciler's two reads: the builds that have not ended (a partial index stays the
        # size of the work in progress, however many builds ever ran), and those that ended
        # lately (their last snapshot request, a cancel the runner may not have had).
        Index(
            "ix_builds_unfinished",
            "id",
            postgresql_where=text(UNFINISHED_SQL),
        ),
        Index("ix_builds_finished_at", "finished_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20), default="queued")
    goal: Mapped[str] = mapped_column(Text)
    tier: Mapped[str] = mapped_column(String(40))
    build_version: Mapped[int | None] = mapped_column(Integer)
    preview_url: Mapped[str | None] = mapped_column(Text)
    sandbox_id: Mapped[str | None] = mapped_column(String(100))
    error: Mapped[str | None] = mapped_column(Text)
    iterations: Mapped[int] = mapped_column(Integer, default=0)
    tool_calls: Mapped[int] = mapped_column(Integer, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    #: ``occurred_at`` of the last status event applied: older events are stale.
    status_changed_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)
    finished_at: Mapped[datetime | None] = mapped_column()


class UserActiveBuilds(Base):
    """How many of a user's builds have not ended: taken (``+1``, only below the plan's limit, in
    the statement that inserts the build) and given back when the build ends (the projection, or
    a cancel), so the limit is checked in O(1) without locking or counting ``builds``."""

    __tablename__ = "user_active_builds"

    user_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    active: Mapped[int] = mapped_column(Integer, default=0)


class OutboxRow(Base):
    """An event committed with the row that caused it, waiting for the relay to publish it."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    stream: Mapped[str] = mapped_column(String(200))
    event_type: Mapped[str] = mapped_column(String(100))
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    #: Unused: the relay deletes what it published. Kept one release (migration 0009 dropped
    #: its index) so a gateway of the release before, which still filters on it, keeps working
    #: during a rolling update; the next migration drops it.
    published_at: Mapped[datetime | None] = mapped_column()


class AgentCheckpoint(Base):
    """One appended part of an agent run: only what is new since the previous part.

    ``kind`` is ``start`` (the context and the model: ``parts`` holds the ``context.ready``
    event and the first message), ``turn`` (an assistant message and the tool results answering
    it, after any message told to the model since the previous part: a replaced sandbox's
    note), ``compaction`` (the whole conversation replaced by its compacted form), ``sleep``
    (with such a note, when one came first) or ``end``. The conversation is rebuilt by
    replaying the parts in ``seq`` order.

    ``generation`` is the build lease's fencing token: an insert succeeds only while no part of a
    newer generation exists, so a runner that lost its lease cannot append behind its successor.
    """

    __tablename__ = "agent_checkpoints"
    __table_args__ = (Index("ix_agent_checkpoints_build_generation", "build_id", "generation"),)

    build_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    generation: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(20))
    parts: Mapped[dict[str, Any]] = mapped_column(JSON)
    iteration: Mapped[int] = mapped_column(Integer, default=0)
    tool_calls: Mapped[int] = mapped_column(Integer, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    sandbox_kind: Mapped[str | None] = mapped_column(String(20))
    sandbox_id: Mapped[str | None] = mapped_column(String(100))
    #: The ``snapshot.requested`` this part carries (a turn's periodic one, the end's final
    #: one), so the reconciler finds a build's latest request without reading ``parts``.
    snapshot_request_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(default=_now)


class CheckpointFence(Base):
    """The highest build-lease generation that has claimed a build's checkpoints.

    A drive claims its generation here, under the lease, before it reads the checkpoints; an
    append is refused once a newer generation has claimed (it reads this row ``for share``, so
    a claim and an append are ordered). Redis hands the generations out; this row is why a
    drive that lost its lease cannot write another part, even before its successor writes one.
    """

    __tablename__ = "checkpoint_fences"

    build_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger)
    claimed_at: Mapped[datetime] = mapped_column(default=_now)


class BuildVersion(Base):
    """The version number a completed build gave its project (1, 2, ... per project)."""

    __tablename__ = "build_versions"

    project_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    build_id: Mapped[str] = mapped_column(String(36), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=_now)


class BudgetLedgerRow(Base):
    """One metered model call: its tokens and what they cost, the durable side of the budget's
    Redis counters (which are rebuilt from these rows when Redis loses them)."""

    __tablename__ = "budget_ledger"
    __table_args__ = (Index("ix_budget_ledger_user_day", "user_id", "day"),)

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(36))
    build_id: Mapped[str] = mapped_column(String(36), index=True)
    day: Mapped[str] = mapped_column(String(10))  # YYYY-MM-DD, UTC
    model: Mapped[str] = mapped_column(String(100))
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_creation_input_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_read_input_tokens: Mapped[int] = mapped_column(BigInteger)
    cost_micros: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=_now)


class BudgetTopUpRow(Base):
    """Extra budget granted to a user (from ``budget.topped_up``), counted in its billing cycle."""

    __tablename__ = "budget_topups"
    __table_args__ = (Index("ix_budget_topups_user_day", "user_id", "day"),)

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(36))
    day: Mapped[str] = mapped_column(String(10))  # YYYY-MM-DD, UTC, when granted
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=_now)


def all_metadata() -> list[MetaData]:
    """Every table the migrations manage: the models and the runtime's ``processed_events``."""
    return [Base.metadata, runtime_metadata]
