"""The declarative scaffolding every service's models share: one naming convention for constraints and indexes.

Each service still declares its own `Base` (`class Base(DeclarativeBase): metadata = orm.metadata()`): its
own registry and MetaData keep its tables apart, so Alembic compares only that service's tables even when
several services run in one process or share one database.

Used by the services with a database; the gateway and the runtime never import it (it uses SQLAlchemy).
"""

from __future__ import annotations

from sqlalchemy import MetaData

__all__ = ["metadata"]

# Constraint and index names are part of every migration: changing them changes the schema.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def metadata() -> MetaData:
    """A new MetaData with the shared naming convention, for one service's `Base`."""
    return MetaData(naming_convention=NAMING_CONVENTION)
