"""Config loading: strict validation, one readable line per problem."""

from __future__ import annotations

import subprocess
import sys

import pytest

from safesync.shared.config import load_settings, parse_config
from safesync.shared.errors import ConfigError


@pytest.mark.parametrize(
    "toml, expected",
    [
        ('[databases]\ndev = "postgres://u:p@h/db"', "must name an environment variable"),
        ('[content_sync]\ntables = ["users"]\nprotected = ["users"]', "users are both content and protected"),
        ('[content_sync]\ntables = ["users"]\nprotected = ["public.users"]', "users are both content and protected"),
        ('[content_sync]\ntables = ["lessons", "public.lessons"]', "tables lists a table twice: lessons and public.lessons"),
        ('[content_sync]\ntables = ["a"]\nprotected = ["users", "users"]', "protected lists a table twice: users"),
        ('[content_sync]\ntables = ["a"]\n[content_sync.options.b]\nmatch_on = ["slug"]', "options given for non-content table(s) b"),
        ('[content_sync]\ntables = ["a"]\n[content_sync.options.a]\nmatch_on = ["x"]\n[content_sync.options."public.a"]\nmatch_on = ["y"]', "options given twice for one table: a and public.a"),
        ('[databases]\nprod = "P"\n[backup]\ndatabases = ["prod", "prod"]', "backup.databases: lists prod twice"),
        ('[[staging_clone.mask]]\ntable = "users"\ncolumn = "email"\nstrategy = "fixed"', 'strategy "fixed" needs the value'),
        ('[[staging_clone.mask]]\ntable = "users"\ncolumn = "email"\nvalue = "x"', 'strategy "null" takes no value'),
        ('[[staging_clone.mask]]\ntable = "users"\ncolumn = "email"\n[[staging_clone.mask]]\ntable = "public.users"\ncolumn = "email"\nstrategy = "hash"',
         "public.users.email masked twice"),
        ('[staging_clone]\nexclude_table_data = ["a; drop table users"]', "is not a table name"),
        ('[staging_clone]\nexclude_table_data = ["logs", "public.logs"]', "exclude_table_data lists a table twice: logs and public.logs"),
        ('[staging_clone]\nschemas = ["public", "public"]', "schemas must be distinct names"),
        ('[migrate]\nallow_data_loss = ["users; drop table users"]', "is not a table or column"),
        ('[migrate]\nallow_data_loss = ["a.b.c.d"]', "is not a table or column"),
        ("[backup]\nkeep_dayly = 3", "backup.keep_dayly: unknown key"),
        ("[nonsense]\nx = 1", "nonsense: unknown key"),
        ('[content_sync]\ntables = ["a; drop table users"]', "is not a table name"),
        ('[content_sync]\nsource = "prod"\ntarget = "prod"', "same database"),
        ('[backup]\ndatabases = ["nope"]', "backup.databases[0] = 'nope' is not one of"),
        ("[backup]\nkeep_daily = -1", "backup.keep_daily"),
        ('[storage]\nurl = "az://bucket"', "file://, gs:// or s3://"),
        ("not toml = = =", "not valid TOML"),
        ("[calendar]\ncalendar_ids = []", "calendar.calendar_ids"),
        ('[calendar]\ncalendar_ids = ["primary", " "]', "an empty calendar id"),
        ('[calendar]\ncalendar_ids = ["primary", "primary"]', "calendar.calendar_ids: lists primary twice"),
    ],
)
def test_invalid_config_is_one_clear_line(toml: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(toml)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_options_name_a_content_table_with_or_without_its_schema() -> None:
    config = parse_config('[content_sync]\ntables = ["public.lessons"]\n[content_sync.options.lessons]\nmatch_on = ["slug"]')
    assert config.content_sync.options["lessons"].match_on == ["slug"]


def test_defaults_when_no_file(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={})
    assert settings.source == "(defaults)"
    assert settings.config.backup.keep_daily == 7
    assert settings.config.backup.keep_monthly == 6
    assert settings.config.storage.url == "file://./backups"


def test_design_example_parses() -> None:
    config = parse_config(
        """
[databases]
dev = "DEV_DATABASE_URL"
staging = "STAGING_DATABASE_URL"
prod = "PROD_DATABASE_URL"
scratch = "SCRATCH_DATABASE_URL"

[storage]
url = "gs://bucket/prefix"

[backup]
databases = ["prod"]
keep_daily = 7
keep_weekly = 4
keep_monthly = 6
keep_predeploy = 20

[content_sync]
source = "dev"
target = "prod"
tables = ["courses", "lessons", "resources", "events", "promotions", "products", "prices"]
protected = ["users", "enrollments", "course_progress"]

[staging_clone]
source = "dev"
target = "staging"
schemas = ["public", "hotels"]

[[validate.rules]]
name = "current streak never exceeds longest"
database = "prod"
sql = "select user_id from user_streaks where current_streak > longest_streak"

[calendar]
database = "prod"
calendar_ids = ["primary"]

[migrate]
database = "prod"
sql_dir = "migrations"
rehearse_on = "scratch"
"""
    )
    assert config.validate_.rules[0].name == "current streak never exceeds longest"
    assert config.staging_clone.schemas == ["public", "hotels"]


def test_missing_env_var_names_database_and_variable(tmp_path) -> None:
    path = tmp_path / "safesync.toml"
    path.write_text('[databases]\nprod = "PROD_DATABASE_URL"\ndev = "DEV_DATABASE_URL"\nstaging = "STAGING_DATABASE_URL"\n')
    settings = load_settings(path, env={"DEV_DATABASE_URL": "postgresql://h/dev"})
    assert settings.database_url("dev") == "postgresql://h/dev"
    with pytest.raises(ConfigError, match="database 'prod': environment variable PROD_DATABASE_URL is not set"):
        settings.database_url("prod")
    with pytest.raises(ConfigError, match="unknown database 'nope'"):
        settings.database_url("nope")


def test_cli_config_error_exit_2_one_line(tmp_path) -> None:
    path = tmp_path / "safesync.toml"
    path.write_text("[backup]\nkeep_dayly = 3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "safesync.functions.cli", "--config", str(path), "status"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"safesync: error: {path}: backup.keep_dayly: unknown key"]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "text, where",
    [
        ('[[validate.rules]]\nname = "orphans"\nsql = "select 1 where false\\u0000; delete from users"\n', "validate.rules.0.sql"),
        ('[content_sync]\ntables = ["lessons\\u0000x"]\n', "content_sync.tables.0"),
        ('[content_sync.options."less\\u0000ons"]\non_conflict = "source"\n', "content_sync.options.less"),
    ],
)
def test_a_nul_character_anywhere_in_the_config_is_refused_naming_the_key(text, where):
    """psycopg sends a query as a C string: a rule's SQL after a NUL never
    ran (the rule checked less than it said), and a name with one cut the
    statement short."""
    with pytest.raises(ConfigError, match="NUL character") as raised:
        parse_config(text, source="t.toml")
    assert raised.value.message.startswith(f"t.toml: {where}")
