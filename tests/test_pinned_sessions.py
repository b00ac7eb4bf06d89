"""A connection whose pinned session settings did not take effect is
refused: through a pooler that drops the startup ``options`` (PgBouncer's
``ignore_startup_parameters = options``), a database's own settings rule —
row_security on (policies silently filter what is read), extra_float_digits
0 (two different floats print, and hash, alike)."""

from __future__ import annotations

import psycopg
import pytest

from safesync.functions.validate import validate
from tests.startup_proxy import OptionsDroppingProxy


def test_a_pooler_dropping_the_session_options_is_named_not_compared_through(make_db, write_settings):
    """Before: validate --against through such a pooler called two tables
    "identical" whose floats differ in the last digits."""
    a, b = make_db(), make_db()
    for url, value in ((a, "0.3"), (b, "0.1::float8 + 0.2::float8")):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"alter database {conn.info.dbname} set extra_float_digits = 0")
            conn.execute("create table readings (id int primary key, value float8)")
            conn.execute(f"insert into readings values (1, {value})")
    port = psycopg.conninfo.conninfo_to_dict(a)["port"]
    with OptionsDroppingProxy(int(port)) as proxy:
        pooled = {name: url.replace(f":{port}/", f":{proxy.port}/") for name, url in (("a", a), ("b", b))}
        answer = validate(write_settings(pooled, '[validate]\nschemas = ["public"]\n'), "a", against="b")
    assert answer.exit_code != 0 and answer.body.get("status") != "ok", answer.body
    error = answer.body.get("error") or answer.body.get("summary")
    assert "did not apply safesync's session settings" in error and "row_security" in error and "extra_float_digits" in error, error
