"""The swap's session gives the builds after the data enough memory:
``maintenance_work_mem`` raised to 256MB (never above the server's
shared_buffers), never lowered. Observed from inside the swap: a generated
column is computed while COPY loads the rows, so an (untruthfully IMMUTABLE)
function in it reads the session's setting at that moment."""

from __future__ import annotations

import psycopg

from safesync.functions.staging_clone import CloneOptions, clone_database

SCHEMA = """
create function public.session_memory() returns bigint language sql immutable
  as $$ select pg_size_bytes(current_setting('maintenance_work_mem')) $$;
create table public.t (id int primary key, memory bigint generated always as (public.session_memory()) stored);
insert into public.t (id) values (1), (2);
"""


def memory_during_swap(make_db, database_setting: str) -> tuple[int, int]:
    """(maintenance_work_mem seen by the swap's COPY, shared_buffers)."""
    dev, staging = make_db(), make_db()
    with psycopg.connect(dev, autocommit=True) as conn:
        conn.execute(SCHEMA)
    with psycopg.connect(staging, autocommit=True) as conn:
        name = conn.info.dbname
        conn.execute(f'alter database "{name}" set maintenance_work_mem = {psycopg.sql.quote(database_setting)}')
        buffers = conn.execute("select pg_size_bytes(current_setting('shared_buffers'))").fetchone()[0]
    clone_database(dev, staging, CloneOptions(schemas=("public",)), compare_after=False)
    with psycopg.connect(staging) as conn:
        seen = {r[0] for r in conn.execute("select memory from public.t")}
    assert len(seen) == 1
    return seen.pop(), buffers


def test_the_swap_raises_maintenance_work_mem_within_shared_buffers(make_db) -> None:
    seen, buffers = memory_during_swap(make_db, "16MB")
    assert buffers > 16 << 20, "the test needs shared_buffers above 16MB"
    assert seen == min(256 << 20, buffers)


def test_the_swap_never_lowers_maintenance_work_mem(make_db) -> None:
    seen, _ = memory_during_swap(make_db, "1GB")
    assert seen == 1 << 30
