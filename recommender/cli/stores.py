"""Where a command's vectors live: an index directory (``--index``) or a database (``--store``).

The PostgreSQL store needs the ``postgres`` extra; it is imported only when ``--store`` (or
``BOOKREC_STORE``) names a database. A DSN is shown through ``mask_dsn`` only, so its password
never reaches the output, a log or an error message.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bookrec import recommender

from .errors import EXIT_UNAVAILABLE, CliError

if TYPE_CHECKING:
    from bookrec.recommender.pgstore import PostgresStore

__all__ = [
    "build",
    "catalog_from_store",
    "drop",
    "migrate",
    "open_store",
    "require_driver",
    "shown",
    "store_dsn",
]


def store_dsn(args: argparse.Namespace) -> str | None:
    """The DSN given by ``--store`` or ``$BOOKREC_STORE`` (``None``: use ``--index``)."""
    dsn: str | None = getattr(args, "store", None)
    return dsn or None


def shown(text: str) -> str:
    """``text`` with the password of any PostgreSQL connection string in it masked."""
    try:
        from bookrec.recommender.pgstore.dsn import mask_dsn
    except ImportError:  # without the driver no connection string was used
        return text
    return mask_dsn(text)


def require_driver() -> None:
    """Raise :class:`CliError` unless the ``postgres`` extra is installed."""
    _pgstore()


def _pgstore() -> Any:
    try:
        from bookrec.recommender import pgstore
    except ImportError as exc:  # psycopg is an extra
        raise CliError(
            f"--store needs the PostgreSQL driver: pip install 'bookrec[postgres]' ({exc})"
        ) from None
    return pgstore


def open_store(dsn: str, replicas: Sequence[str] = ()) -> PostgresStore:
    """The default index of the database at ``dsn``, opened for queries (read from the first
    usable one of ``replicas``, if any)."""
    pgstore = _pgstore()
    try:
        store: PostgresStore = pgstore.PostgresStore.open(dsn, replicas=replicas)
    except recommender.IndexNotFoundError:
        raise CliError(
            f"no index in the database at {shown(dsn)}; build it first with: "
            f"bookrec index --catalog <file> --store {shown(dsn)}"
        ) from None
    return store


def catalog_from_store(store: PostgresStore) -> recommender.Catalog:
    """The catalog kept in the store's database (``CliError`` when it holds no books)."""
    catalog = store.catalog()
    if not len(catalog):
        raise CliError(f"the database at {store.dsn} holds no books; index a catalog first")
    return catalog


def migrate(dsn: str) -> int:
    """Apply the schema migrations the database lacks; returns its schema version."""
    pgstore = _pgstore()
    import psycopg

    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            version: int = pgstore.migrate(conn)
    except psycopg.Error as err:
        raise CliError(
            f"cannot migrate the database at {shown(dsn)}: {shown(str(err).strip())}",
            exit_code=EXIT_UNAVAILABLE,
        ) from None
    return version


def drop(dsn: str) -> bool:
    """Remove the default index of the database at ``dsn`` (``--rebuild``): the books stay."""
    _pgstore()
    from bookrec.recommender.pgstore.indexing import drop_pg_index

    return drop_pg_index(dsn)


def build(
    dsn: str,
    catalog: recommender.Catalog,
    embedder: Any,
    *,
    chunk_size: int,
    progress: Any,
    halfvec: bool = False,
) -> recommender.IndexReport:
    """``build_pg_index`` into the default index of the database at ``dsn``."""
    _pgstore()
    from bookrec.recommender.pgstore.indexing import build_pg_index

    report: recommender.IndexReport = build_pg_index(
        dsn, catalog, embedder, chunk_size=chunk_size, progress=progress, halfvec=halfvec
    )
    return report
