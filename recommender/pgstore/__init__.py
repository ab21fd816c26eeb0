"""The PostgreSQL store of book vectors (``pip install bookrec[postgres]``).

```python
from bookrec.recommender.pgstore import PostgresStore

store = PostgresStore.create("postgresql://bookrec@db/books", identity)   # or .open(dsn)
rec = Recommender(catalog, store, embedder)
```
"""

from .dsn import mask_dsn
from .schema import SCHEMA_VERSION, SchemaVersionError, migrate
from .store import PostgresStore

__all__ = ["SCHEMA_VERSION", "PostgresStore", "SchemaVersionError", "mask_dsn", "migrate"]
