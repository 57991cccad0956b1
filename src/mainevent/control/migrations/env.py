"""Alembic environment: runs on the connection handed in by `mainevent.control.db.upgrade`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from mainevent.control.db import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # invoked by the alembic command line with sqlalchemy.url set
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
