"""The LMS fixture itself: both variants build, and differ only as documented."""

from __future__ import annotations

import psycopg

from safesync.shared import db
from tests.fixtures.lms import LMS_CONTENT, LMS_PROTECTED, create_lms, lms_config_toml


def test_lms_variants_build_and_differ_as_documented(make_db):
    dev, prod = make_db(), make_db()
    create_lms(dev, variant="dev")
    create_lms(prod, variant="prod")
    with psycopg.connect(dev) as d, psycopg.connect(prod) as p:
        tables = {t.name for t in db.list_tables(p)}
        assert tables == set(LMS_CONTENT) | set(LMS_PROTECTED)
        assert p.execute("select count(*) from lesson_progress").fetchone()[0] > 0
        assert p.execute("select count(*) from users").fetchone()[0] == 20
        assert d.execute("select count(*) from users").fetchone()[0] == 2
        # dev has more lessons (new course) and some edited ones
        assert d.execute("select count(*) from lessons").fetchone()[0] == p.execute("select count(*) from lessons").fetchone()[0] + 3
        assert db.table_fingerprint(d, db.TableRef("public", "lessons")) != db.table_fingerprint(p, db.TableRef("public", "lessons"))
        # sequences moved past explicit ids: a default insert does not collide
        d.execute("insert into products (sku, name) values ('x', 'y')")
        p.execute("insert into events (title, starts_at) values ('x', now())")
    assert 'tables = ["courses"' in lms_config_toml()


def test_lms_is_deterministic(make_db):
    a, b = make_db(), make_db()
    create_lms(a, variant="prod", scale=2)
    create_lms(b, variant="prod", scale=2)
    with psycopg.connect(a) as ca, psycopg.connect(b) as cb:
        assert db.database_fingerprint(ca) == db.database_fingerprint(cb)
