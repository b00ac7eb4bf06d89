"""The plain-dump entry filter the clone uses (``staging_clone.dumpfilter``):
it drops exactly the entries asked for, never looks inside COPY data, and
refuses to drop anything that is not the statement its header announced."""

from __future__ import annotations

import pytest

from safesync.functions.staging_clone.dumpfilter import DumpFilter, DumpFilterError


def header(name: str, type_: str, schema: str = "-", owner: str = "postgres") -> str:
    return f"--\n-- Name: {name}; Type: {type_}; Schema: {schema}; Owner: {owner}\n--\n\n"


DUMP = (
    "SET statement_timeout = 0;\n"
    + header("auth", "SCHEMA", owner="supabase_admin")
    + "CREATE SCHEMA auth;\n\n\nALTER SCHEMA auth OWNER TO supabase_admin;\n\n"
    + "SET default_tablespace = '';\n\n"
    + header("users", "TABLE", "auth", "supabase_auth_admin")
    + "CREATE TABLE auth.users (\n    id uuid NOT NULL,\n    note text\n);\n\n"
    + header("users", "TABLE DATA", "auth", "supabase_auth_admin").replace("-- Name:", "-- Data for Name:")
    + "COPY auth.users (id, note) FROM stdin;\n"
    + "00000000-0000-0000-0000-000000000001\t--\n"
    + "00000000-0000-0000-0000-000000000002\t-- Name: auth; Type: SCHEMA; Schema: -; Owner: x\n"
    + "\\.\n\n"
    + header("DEFAULT PRIVILEGES FOR TABLES", "DEFAULT ACL", "public", "supabase_admin")
    + "ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON TABLES TO anon;\n\n"
    + "--\n-- PostgreSQL database dump complete\n--\n"
)


def run(data: str, drop, chunk: int) -> tuple[str, list]:
    f = DumpFilter(drop)
    raw = data.encode()
    out = b"".join(f.feed(raw[i : i + chunk]) for i in range(0, len(raw), chunk)) + f.finish()
    return out.decode(), f.dropped


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1 << 20])
def test_drops_the_entries_asked_for_whatever_the_chunking(chunk):
    out, dropped = run(DUMP, lambda e: e.type == "SCHEMA" or (e.type == "DEFAULT ACL" and e.owner == "supabase_admin"), chunk)
    assert "CREATE SCHEMA auth" not in out and "ALTER DEFAULT PRIVILEGES" not in out
    assert [str(e) for e in dropped] == ["SCHEMA auth", "DEFAULT ACL DEFAULT PRIVILEGES FOR TABLES (schema public)"]
    # everything else passes untouched: the session setting after the dropped
    # entry, the table, and COPY rows that look like comments and headers
    assert "SET default_tablespace = '';" in out
    assert "CREATE TABLE auth.users" in out
    assert "00000000-0000-0000-0000-000000000002\t-- Name: auth; Type: SCHEMA; Schema: -; Owner: x\n\\.\n" in out
    # (comment lines that follow a dropped entry go with it: the clone checks
    # pg_dump's "dump complete" trailer on the stream before filtering)


def test_keeps_everything_when_nothing_is_dropped():
    out, dropped = run(DUMP, lambda e: False, 5)
    assert out == DUMP and dropped == []


def test_a_header_inside_a_function_body_never_truncates_it():
    body = (
        header("f()", "FUNCTION", "public")
        + "CREATE FUNCTION public.f() RETURNS text LANGUAGE sql AS $$\n"
        + "--\n-- Name: auth; Type: SCHEMA; Schema: -; Owner: x\n--\nselect 'not a statement'\n$$;\n"
    )
    with pytest.raises(DumpFilterError, match="unexpected statement"):
        run(body, lambda e: e.type == "SCHEMA", 64)


REFRESHES = (
    header("users", "TABLE", "public") + "CREATE TABLE public.users (id integer);\n\n"
    + header("a", "MATERIALIZED VIEW DATA", "public") + "REFRESH MATERIALIZED VIEW public.a;\n\n"
    + header("b", "MATERIALIZED VIEW DATA", "public") + "REFRESH MATERIALIZED VIEW public.b;\n\n"
    + "--\n-- PostgreSQL database dump complete\n--\n"
)


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_held_entries_leave_the_stream_and_keep_their_order(chunk):
    f = DumpFilter(lambda e: False, hold=lambda e: e.type == "MATERIALIZED VIEW DATA")
    raw = REFRESHES.encode()
    out = (b"".join(f.feed(raw[i : i + chunk]) for i in range(0, len(raw), chunk)) + f.finish()).decode()
    assert "CREATE TABLE public.users" in out and "REFRESH" not in out
    held = bytes(f.held).decode()
    assert held.index("REFRESH MATERIALIZED VIEW public.a;") < held.index("REFRESH MATERIALIZED VIEW public.b;")


def test_a_held_entry_holding_anything_but_its_statement_fails():
    body = header("a", "MATERIALIZED VIEW DATA", "public") + "DROP TABLE public.users;\n"
    f = DumpFilter(lambda e: False, hold=lambda e: e.type == "MATERIALIZED VIEW DATA")
    with pytest.raises(DumpFilterError, match="held back, holds an unexpected statement"):
        f.feed(body.encode())
