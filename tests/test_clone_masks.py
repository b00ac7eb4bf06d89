"""Masks in a staging clone on tables with partitions and inheritance
children: the mask's UPDATE rewrites their rows too, so their triggers are
off during it and their masked columns are not compared with dev's."""

from __future__ import annotations

import psycopg
import pytest

from safesync.functions.staging_clone import CloneOptions, Mask, clone_database
from safesync.shared.db import TableRef
from safesync.shared.errors import Refused

TRIGGERS = "select tgrelid::regclass::text, tgname, tgenabled from pg_trigger where not tgisinternal order by 1, 2"
DEV = (
    "create function touch() returns trigger language plpgsql as $$ begin new.touched := new.touched + 1; return new; end $$",
    "create table people (id int primary key, email text, touched int not null default 0)",
    "create table staff (role text) inherits (people)",  # an inheritance child with its own trigger
    "create trigger touch before update on staff for each row execute function touch()",
    "create table events (id int, email text, touched int not null default 0) partition by list (id)",
    "create table events_1 partition of events for values in (1)",
    "create table events_2 partition of events for values in (2)",
    "create trigger touch before update on events for each row execute function touch()",  # cloned onto both partitions
    "alter table events_2 disable trigger touch",  # ... and off on one of them
    "create trigger own before update on events_1 for each row execute function touch()",  # a partition's own
    "insert into people values (1, 'p@real.example')",
    "insert into staff values (2, 's@real.example', 0, 'boss')",
    "insert into events values (1, 'e1@real.example'), (2, 'e2@real.example')",
)
MASKS = tuple(Mask(TableRef("public", t), "email", "hash", "@masked.invalid") for t in ("people", "events"))


def run(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def test_masking_fires_no_trigger_of_a_partition_or_child_and_puts_each_back(make_db):
    """Before: only the masked table's own triggers were switched off, so
    the UPDATE fired the child's and the partition's (staging's rows came
    out stamped: touched = 1 or 2)."""
    dev, staging = make_db(), make_db()
    run(dev, *DEV)
    clone_database(dev, staging, CloneOptions(schemas=("public",), masks=MASKS), compare_after=False)
    with psycopg.connect(staging) as s, psycopg.connect(dev) as d:
        rows = s.execute("select email, touched from people union all select email, touched from events").fetchall()
        assert len(rows) == 4 and all(e.endswith("@masked.invalid") and touched == 0 for e, touched in rows), rows
        assert s.execute(TRIGGERS).fetchall() == d.execute(TRIGGERS).fetchall()


def test_the_proof_leaves_out_the_masked_column_of_an_inheritance_child(make_db):
    """Before: staff (a child of the masked people) was compared whole, so
    the proof called it different and printed dev's real address of it."""
    dev, staging = make_db(), make_db()
    run(dev, *DEV)
    result = clone_database(dev, staging, CloneOptions(schemas=("public",), masks=MASKS))
    rows = result.comparison.data.rows("dev", "staging", all_tables=True)
    assert result.identical, rows
    excluded = {r["table"]: r["not compared columns"] for r in rows}
    assert excluded == {"public.people": "email", "public.staff": "email", "public.events": "email"}
    assert "real.example" not in repr(rows)


def test_masks_whose_values_cannot_fit_the_column_are_refused_while_planning(make_db):
    """Before: these failed inside the swap (after the safety backup), with
    the server's error quoting the UPDATE and its per-run salt."""
    dev, staging = make_db(), make_db()
    run(dev, "create type mood as enum ('ok')", "create domain positive as int check (value > 0)",
        "create table u (id int primary key, tags text[], code varchar(10), ch char(5), wide varchar(64), m mood, p positive, n int)")
    table = TableRef("public", "u")
    masks = (Mask(table, "tags", "hash"), Mask(table, "code", "hash"), Mask(table, "ch", "hash"), Mask(table, "wide", "hash", "@x.invalid"),
             Mask(table, "m", "fixed", "sad"), Mask(table, "p", "fixed", "-1"), Mask(table, "n", "fixed", "many"))
    swapped = []
    with pytest.raises(Refused) as refused:
        clone_database(dev, staging, CloneOptions(schemas=("public",), masks=masks), before_swap=lambda: swapped.append(1))
    problems = refused.value.detail["problems"]
    assert problems == [
        "mask: public.u.tags is text[]; hash works on text and uuid columns",
        "mask: public.u.code is character varying(10): a hash is 32 characters plus its suffix (32), more than 10",
        "mask: public.u.ch is character(5): a hash is 32 characters plus its suffix (32), more than 5",
        "mask: value 'sad' for public.u.m is not of type public.mood: invalid input value for enum public.mood: \"sad\"",
        "mask: value '-1' for public.u.p is not of type public.positive: value for domain public.positive violates check constraint \"positive_check\"",
        "mask: value 'many' for public.u.n is not of type integer: invalid input syntax for type integer: \"many\"",
    ], problems
    assert not swapped
