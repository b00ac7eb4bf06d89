"""The order of a content sync's and an undo's writes (real PostgreSQL): a
unique or foreign-key constraint that is not deferrable is checked after
every row or statement, so the order decides whether a legitimate change
can be written at all — and where none can, the refusal says why and what
to change."""

from __future__ import annotations

import psycopg
import pytest

from safesync.functions.content_sync import content_sync, content_undo
from tests.fixtures.lms import LMS_CONTENT
from tests.test_content_sync_undo import execute, fingerprints, synced


def on_dev(dev: str, *statements: str) -> None:
    with psycopg.connect(dev) as conn:
        for statement in statements:
            conn.execute(statement)


def test_a_row_recreated_under_a_new_id_with_the_same_unique_value_syncs_and_undoes(lms):
    """The editor deleted a product and created it again (new id, same sku):
    the old row must be gone before the new one is written — and an undo
    must remove the new one before it puts the old one back."""
    make, dev, prod = lms
    settings = make(delete_missing=True)
    on_dev(dev, "insert into products (id, sku, name) values (9001, 'SKU-RECREATED', 'first')")
    synced(settings)
    on_dev(dev, "delete from products where id = 9001", "insert into products (id, sku, name) values (9002, 'SKU-RECREATED', 'second')")
    before = fingerprints(prod, LMS_CONTENT)
    body = synced(settings)
    assert execute(prod, "select id, name from products where sku = 'SKU-RECREATED'") == [(9002, "second")]
    assert body["details"]["protection_proof"]["ok"] is True
    tally = {r["table"]: r for r in body["tables"]["tables"]}
    assert tally["products"]["deleted"] == 1 and tally["products"]["written"] >= 1
    undone = content_undo(settings, body["run_id"])
    assert undone.status == 200, undone.body
    assert fingerprints(prod, LMS_CONTENT) == before
    assert execute(prod, "select id, name from products where sku = 'SKU-RECREATED'") == [(9001, "first")]
    redo = content_undo(settings, undone.body["run_id"])  # and the undo of that undo is ordered the same way
    assert redo.status == 200, redo.body
    assert execute(prod, "select id, name from products where sku = 'SKU-RECREATED'") == [(9002, "second")]


def test_a_parent_a_content_row_is_repointed_away_from_is_deleted_after_the_repointing(lms):
    """A price moved from a deleted product to a new one: the old product
    stays until the price no longer points at it, both ways."""
    make, dev, prod = lms
    settings = make(delete_missing=True)
    on_dev(dev, "insert into products (id, sku, name) values (9001, 'SKU-OLD', 'old')",
           "insert into prices (id, product_id, currency, amount_cents) values (9101, 9001, 'EUR', 500)")
    synced(settings)
    on_dev(dev, "insert into products (id, sku, name) values (9002, 'SKU-NEW', 'new')",
           "update prices set product_id = 9002 where id = 9101", "delete from products where id = 9001")
    before = fingerprints(prod, LMS_CONTENT)
    body = synced(settings)
    assert execute(prod, "select product_id from prices where id = 9101") == [(9002,)]
    assert execute(prod, "select count(*) from products where id = 9001") == [(0,)]
    undone = content_undo(settings, body["run_id"])
    assert undone.status == 200, undone.body
    assert fingerprints(prod, LMS_CONTENT) == before


def synced_and_undone(settings, prod: str, *, refused_on: str | None, synced_state: tuple[str, list]) -> None:
    """Sync, then undo. ``refused_on``: the constraint the sync must be
    refused on, nothing written, the message naming it and the remedy. Else
    the sync is written (``synced_state``: a query and the rows it must
    return then) and the undo puts production back exactly."""
    before = fingerprints(prod, LMS_CONTENT)
    answer = content_sync(settings, "sync")
    if refused_on:
        assert answer.status == 422, answer.body
        error = answer.body["error"]
        assert refused_on in error and "rolled back, target unchanged" in error and "USING INDEX" in error
        assert fingerprints(prod, LMS_CONTENT) == before
        return
    assert answer.status == 200, answer.body
    assert execute(prod, synced_state[0]) == synced_state[1]
    undone = content_undo(settings, answer.body["run_id"])
    assert undone.status == 200, undone.body
    assert fingerprints(prod, LMS_CONTENT) == before


@pytest.mark.parametrize("deferrable", [False, True], ids=["immediate", "deferrable"])
def test_values_swapped_between_rows(lms, deferrable):
    """Two products exchanged their skus on dev. Not deferrable: refused,
    nothing written, the message names the constraint and the remedy.
    DEFERRABLE (INITIALLY IMMEDIATE), made from a unique index as the
    message says: safesync defers it inside its transaction, so the swap
    and its undo are written."""
    make, dev, prod = lms
    settings = make()
    synced(settings)
    skus = "select id, sku from products where id in (1, 2) order by id"
    assert execute(prod, skus) == [(1, "SKU-00001"), (2, "SKU-00002")]
    on_dev(dev, "update products set sku = 'swap-tmp' where id = 1", "update products set sku = 'SKU-00001' where id = 2",
           "update products set sku = 'SKU-00002' where id = 1")
    if deferrable:
        for url in (dev, prod):
            # the remedy the refusal names, from a unique index as Prisma and Rails create them
            execute(url, "alter table products drop constraint products_sku_key")
            execute(url, "create unique index products_sku_key on products (sku)")
            execute(url, "alter table products add constraint products_sku_key unique using index products_sku_key deferrable initially immediate")
    synced_and_undone(settings, prod, refused_on=None if deferrable else "products_sku_key", synced_state=(skus, [(1, "SKU-00002"), (2, "SKU-00001")]))


@pytest.mark.parametrize("deferrable", [False, True], ids=["immediate", "deferrable"])
def test_new_rows_referencing_each_other_across_content_tables(lms, deferrable):
    """A new course whose featured lesson is a new lesson of that course: a
    cycle of foreign keys. Not deferrable: refused, nothing written, the
    constraint and the remedy named. DEFERRABLE: written, and undone."""
    make, dev, prod = lms
    clause = " deferrable initially immediate" if deferrable else ""
    for url in (dev, prod):
        execute(url, f"alter table courses add column featured_lesson_id integer references lessons (id){clause}")
    settings = make()
    synced(settings)
    on_dev(dev, "insert into courses (id, slug, title) values (9001, 'cycle', 'c')",
           "insert into lessons (id, course_id, position, title, updated_at) values (9001, 9001, 1, 'l', now())",
           "update courses set featured_lesson_id = 9001 where id = 9001")
    featured = ("select featured_lesson_id from courses where id = 9001", [(9001,)])
    synced_and_undone(settings, prod, refused_on=None if deferrable else "courses_featured_lesson_id_fkey", synced_state=featured)


@pytest.mark.parametrize("on_delete", ["no action", "cascade"])
def test_an_undo_never_deletes_a_row_that_content_written_on_production_since_references(lms, on_delete):
    """The sync added a course; an editor then wrote a lesson of it straight
    on production. Undoing the sync would have to delete the course: it is
    refused naming the lesson table, nothing changed — the lesson is not
    the undo's to delete (never cascaded into), nor its reference to
    break."""
    make, dev, prod = lms
    for url in (dev, prod):
        execute(url, "alter table lessons drop constraint lessons_course_id_fkey, add constraint lessons_course_id_fkey "
                     f"foreign key (course_id) references courses (id) on delete {on_delete}")
    settings = make()
    synced(settings)
    on_dev(dev, "insert into courses (id, slug, title) values (9001, 'new-course', 'New')")
    body = synced(settings)
    execute(prod, "insert into lessons (id, course_id, position, title, updated_at) values (9101, 9001, 1, 'written on production', now())")
    before = fingerprints(prod, LMS_CONTENT)
    for dry_run in (True, False):
        undone = content_undo(settings, body["run_id"], dry_run=dry_run)
        assert undone.status == 422, undone.body
        summary = undone.body["summary"]
        assert "rolled back, nothing changed" in summary and "courses" in summary and "9001" in summary and "referenced by lessons" in summary
        assert fingerprints(prod, LMS_CONTENT) == before


def test_rows_of_one_table_referencing_each_other_are_undone_together(lms):
    """A new lesson and a new lesson that requires it (a self-reference):
    the undo deletes both, the reference between them holds neither."""
    make, dev, prod = lms
    for url in (dev, prod):
        execute(url, "alter table lessons add column prerequisite_id integer references lessons (id)")
    settings = make()
    synced(settings)
    on_dev(dev, "insert into lessons (id, course_id, position, title, updated_at) values (9001, 1, 101, 'basics', now())",
           "insert into lessons (id, course_id, position, title, updated_at, prerequisite_id) values (9002, 1, 102, 'next', now(), 9001)")
    synced_and_undone(settings, prod, refused_on=None, synced_state=("select id, prerequisite_id from lessons where id > 9000 order by id", [(9001, None), (9002, 9001)]))


@pytest.mark.parametrize("on_delete", ["no action", "set null"])
def test_a_sync_never_deletes_a_row_that_content_written_on_production_references(lms, on_delete):
    """The sync added a course, an editor wrote a lesson of it on
    production, then the course was deleted on dev: deleting it would fail,
    or rewrite that lesson (SET NULL). Refused, for good (422: the next run
    would meet the same lesson), nothing changed."""
    make, dev, prod = lms
    for url in (dev, prod):
        execute(url, "alter table lessons alter column course_id drop not null, drop constraint lessons_course_id_fkey, "
                     f"add constraint lessons_course_id_fkey foreign key (course_id) references courses (id) on delete {on_delete}")
    settings = make(delete_missing=True)
    synced(settings)
    on_dev(dev, "insert into courses (id, slug, title) values (9001, 'new-course', 'New')")
    synced(settings)
    execute(prod, "insert into lessons (id, course_id, position, title, updated_at) values (9101, 9001, 1, 'written on production', now())")
    on_dev(dev, "delete from courses where id = 9001")
    before = fingerprints(prod, LMS_CONTENT)
    answer = content_sync(settings, "sync")
    assert answer.status == 422 and answer.permanent, answer.body
    said = answer.body.get("error") or answer.body["summary"]
    assert "rolled back" in said and ("9101" in said or "still referenced from table \"lessons\"" in said), said
    assert fingerprints(prod, LMS_CONTENT) == before
