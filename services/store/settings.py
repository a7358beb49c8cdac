"""Store service settings."""

from __future__ import annotations

from steward.settings import CommonSettings


class StoreSettings(CommonSettings):
    """Where the store listens and which database it owns."""

    # Empty means a SQLite file `steward.db` in the data directory.
    database_url: str = ""

    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL to connect to."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'steward.db').resolve()}"
