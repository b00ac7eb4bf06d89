"""``safesync.toml``: loading, validation and the resolved Settings.

Secrets never live in the file: ``[databases]`` maps a name to the name of an
environment variable holding the URL. Validation is strict (unknown keys are
errors) so a typo never silently disables a safety setting; every problem is
reported as one ``ConfigError`` line naming the key.
"""

from __future__ import annotations

import os
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .parsing import parse_toml, read_toml_file
from .redaction import remember

CONFIG_ENV = "SAFESYNC_CONFIG"
DEFAULT_CONFIG_FILE = "safesync.toml"
# Matched with fullmatch: "$" would also match before a final "\n".
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
_TABLE = re.compile(r"([A-Za-z_][A-Za-z0-9_$]*\.)?[A-Za-z_][A-Za-z0-9_$]*")
_OBJECT = re.compile(r"([A-Za-z_][A-Za-z0-9_$]*\.){0,2}[A-Za-z_][A-Za-z0-9_$]*")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_tables(names: list[str]) -> list[str]:
    for name in names:
        if not _TABLE.fullmatch(name):
            raise ValueError(f"{name!r} is not a table name (use name or schema.name)")
    return names


def _qualified(name: str) -> str:
    """``schema.name`` of a configured table name: ``lessons`` and
    ``public.lessons`` are one table (as ``db.TableRef.parse`` reads them)."""
    return name if "." in name else f"public.{name}"


def _twice(names: list[str]) -> list[str]:
    """The names that denote a table listed before them (as written)."""
    first: dict[str, str] = {}
    repeated = []
    for name in names:
        key = _qualified(name)
        if key in first:
            repeated.append(name if first[key] == name else f"{first[key]} and {name}")
        else:
            first[key] = name
    return repeated


class StorageSection(_Section):
    url: str = "file://./backups"

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not v.startswith(("file://", "gs://", "s3://")):
            raise ValueError("must start with file://, gs:// or s3://")
        return v


# `backup.compress`: a method with an optional level, as pg_dump 16 spells it.
_COMPRESS = re.compile(r"(?P<method>zstd|gzip|none|auto)(?::(?P<level>\d{1,2}))?")
_LEVELS = {"zstd": (1, 22, 3), "gzip": (1, 9, 6)}  # (lowest, highest, pg_dump's default)


def normalize_compress(text: str) -> str:
    """``"auto"``, ``"none"`` or ``"<method>:<level>"`` (a bare method gets
    pg_dump's default level); ValueError naming what is accepted."""
    match = _COMPRESS.fullmatch(text.strip().lower())
    accepted = 'use "auto", "zstd:1".."zstd:22", "gzip:1".."gzip:9" or "none"'
    if not match:
        raise ValueError(f"{text!r} is not a compression; {accepted}")
    method, level = match["method"], match["level"]
    if method in ("auto", "none"):
        if level is not None:
            raise ValueError(f"{text!r}: {method} takes no level; {accepted}")
        return method
    low, high, default = _LEVELS[method]
    number = default if level is None else int(level)
    if not low <= number <= high:
        raise ValueError(f"{text!r}: {method} levels are {low}..{high}; {accepted}")
    return f"{method}:{number}"


class BackupSection(_Section):
    databases: list[str] = Field(default_factory=lambda: ["prod"])
    keep_daily: int = Field(7, ge=0)
    keep_weekly: int = Field(4, ge=0)
    keep_monthly: int = Field(6, ge=0)
    keep_predeploy: int = Field(20, ge=0)
    # the last N backups of EACH event kind (presync, premigrate, safety): undo points
    keep_event: int = Field(10, ge=0)
    incomplete_grace_hours: float = Field(6, ge=0)
    # a restore waiting longer on one lock (the application's open transaction) is cancelled and rolled back
    restore_lock_wait_seconds: float = Field(60, gt=0)
    # "auto": zstd:1 when the chosen pg_dump has zstd (PostgreSQL 16+ built
    # with it), else gzip:1 — both measured fastest and zstd:1 smallest.
    compress: str | None = None
    compress_level: int | None = Field(None, ge=0, le=9)  # the old key: gzip level N (0: none)
    prune_after_create: bool = True
    # client-side encryption: "age" encrypts every new backup to these public
    # keys; restoring needs a matching identity from the environment
    encrypt: Literal["none", "age"] = "none"
    age_recipients: list[str] = Field(default_factory=list)

    @field_validator("databases")
    @classmethod
    def _once_each(cls, v: list[str]) -> list[str]:
        twice = sorted({name for name in v if v.count(name) > 1})
        if twice:  # a scheduled run would back each one up twice
            raise ValueError(f"lists {', '.join(twice)} twice")
        return v

    @field_validator("age_recipients")
    @classmethod
    def _recipients(cls, v: list[str]) -> list[str]:
        from .agefile import parse_recipient  # imports cryptography: only when recipients are configured (cold start)

        keys = []
        for i, text in enumerate(v):
            try:
                keys.append(parse_recipient(text))
            except ValueError as exc:
                raise ValueError(f"item {i}: {exc}") from None
        if len(set(keys)) != len(keys):
            raise ValueError("age_recipients lists a key twice")
        return v

    @model_validator(mode="after")
    def _encryption(self) -> "BackupSection":
        if self.encrypt == "age" and not self.age_recipients:
            raise ValueError('encrypt = "age" needs age_recipients (public keys: age1…, as age-keygen prints them)')
        if self.encrypt == "none" and self.age_recipients:
            raise ValueError('age_recipients are set but encrypt is not "age": set encrypt = "age" (or remove them)')
        return self

    _compress = field_validator("compress")(classmethod(lambda cls, v: None if v is None else normalize_compress(v)))

    @model_validator(mode="after")
    def _one_compression(self) -> "BackupSection":
        if self.compress is not None and self.compress_level is not None:
            raise ValueError("set backup.compress or the old backup.compress_level, not both")
        return self

    @property
    def compression(self) -> str:
        """What was asked for, normalized: ``auto``, ``none`` or ``method:level``
        (the old ``compress_level = N`` is ``gzip:N``, 0 is ``none``)."""
        if self.compress_level is not None:
            return f"gzip:{self.compress_level}" if self.compress_level else "none"
        return self.compress or "auto"


class TableOptions(_Section):
    """Per-table overrides for content sync."""

    match_on: list[str] | None = None
    on_conflict: Literal["source", "target", "fail"] | None = None
    ignore_columns: list[str] | None = None  # neither compared nor written (e.g. stamped by a BEFORE trigger)
    undo_conflict: Literal["keep", "restore", "fail"] | None = None


class ContentSyncSection(_Section):
    source: str = "dev"
    target: str = "prod"
    tables: list[str] = Field(default_factory=list)
    protected: list[str] = Field(default_factory=list)
    delete_missing: bool = False
    on_conflict: Literal["source", "target", "fail"] = "fail"
    # a row changed in the target since the sync being undone: keep it as it is now, restore the
    # sync's before-image over it, or refuse the undo (naming the row)
    undo_conflict: Literal["keep", "restore", "fail"] = "fail"
    # the undo point beside the undo log: the whole target (concurrently with the sync), only the
    # content tables and the ledger, or none (then the undo log is the only way back)
    presync_backup: Literal["full", "content", "none"] = "full"
    undo_log: bool = True
    options: dict[str, TableOptions] = Field(default_factory=dict)
    # a target role that could write a protected table: a warning, or (true) a refusal
    require_least_privilege: bool = False
    # tables (content tables, the ledger, tables FK actions reach) and event triggers whose
    # side channels were reviewed: reported, not refused — dry-run and sync run that code
    acknowledge_side_channels: list[str] = Field(default_factory=list)
    acknowledge_event_triggers: list[str] = Field(default_factory=list)

    _tables = field_validator("tables", "protected", "acknowledge_side_channels")(classmethod(lambda cls, v: _check_tables(v)))

    @model_validator(mode="after")
    def _disjoint(self) -> "ContentSyncSection":
        for field in ("tables", "protected"):
            if twice := _twice(getattr(self, field)):
                raise ValueError(f"{field} lists a table twice: {', '.join(twice)}")
        protected = {_qualified(t) for t in self.protected}
        both = sorted(t for t in self.tables if _qualified(t) in protected)
        if both:
            raise ValueError(f"table(s) {', '.join(both)} are both content and protected")
        if self.source == self.target:
            raise ValueError(f"source and target are the same database ({self.source!r})")
        if self.presync_backup == "none" and not self.undo_log:
            raise ValueError('presync_backup = "none" needs the undo log (undo_log = true): a sync would leave no way back')
        if twice := _twice(list(self.options)):
            raise ValueError(f"options given twice for one table: {', '.join(twice)}")
        content = {_qualified(t) for t in self.tables}
        unknown = sorted(t for t in self.options if _qualified(t) not in content)
        if unknown:
            raise ValueError(f"options given for non-content table(s) {', '.join(unknown)}")
        return self


class MaskRule(_Section):
    table: str
    column: str
    strategy: Literal["null", "fixed", "hash"] = "null"
    value: str | None = None

    _tables = field_validator("table")(classmethod(lambda cls, v: _check_tables([v])[0]))

    @model_validator(mode="after")
    def _value_fits(self) -> "MaskRule":
        if self.strategy == "fixed" and self.value is None:
            raise ValueError(f"{self.table}.{self.column}: strategy \"fixed\" needs the value to write")
        if self.strategy == "null" and self.value is not None:
            raise ValueError(f"{self.table}.{self.column}: strategy \"null\" takes no value (\"fixed\" writes one)")
        return self


class StagingCloneSection(_Section):
    source: str = "dev"
    target: str = "staging"
    schemas: list[str] = Field(default_factory=lambda: ["public"], min_length=1)
    exclude_table_data: list[str] = Field(default_factory=list)
    mask: list[MaskRule] = Field(default_factory=list)

    _tables = field_validator("exclude_table_data")(classmethod(lambda cls, v: _check_tables(v)))

    @model_validator(mode="after")
    def _distinct(self) -> "StagingCloneSection":
        if self.source == self.target:
            raise ValueError(f"source and target are the same database ({self.source!r})")
        if "" in self.schemas or len(set(self.schemas)) != len(self.schemas):
            raise ValueError(f"schemas must be distinct names, not {self.schemas}")
        if twice := _twice(self.exclude_table_data):
            raise ValueError(f"exclude_table_data lists a table twice: {', '.join(twice)}")
        columns = [f"{_qualified(m.table)}.{m.column}" for m in self.mask]
        if twice := sorted({c for c in columns if columns.count(c) > 1}):
            raise ValueError(f"mask: column(s) {', '.join(twice)} masked twice (one rule per column)")
        return self


class Rule(_Section):
    name: str
    sql: str
    database: str | None = None
    max_rows: int = Field(5, ge=1, le=1000)


class ExpectedRelation(_Section):
    """A relation the database should enforce (even if its FK was dropped)."""

    table: str
    columns: list[str]
    references: str
    ref_columns: list[str]


class ValidateSection(_Section):
    database: str | None = None
    rules: list[Rule] = Field(default_factory=list)
    rls_schemas: list[str] = Field(default_factory=list)
    expected_relations: list[ExpectedRelation] = Field(default_factory=list)
    schemas: list[str] | None = None  # checked schemas; default: staging_clone.schemas
    allow_missing_pk: list[str] = Field(default_factory=list)  # tables allowed to have no primary key
    rule_timeout: str = "60s"  # statement_timeout of each rule


class CalendarSection(_Section):
    database: str = "prod"
    calendar_ids: list[str] = Field(default_factory=lambda: ["primary"], min_length=1)
    incremental_days: int = Field(14, ge=1)
    full_days: int = Field(90, ge=1)
    retention_days: int = Field(180, ge=1)
    max_delete_share: float = Field(0.2, ge=0, le=1)
    max_retries: int = Field(3, ge=1)
    rate_limit_per_minute: int = Field(60, ge=1)
    # calendar issue: guards, Google call tuning, push notifications
    delete_guard_min_rows: int = Field(10, ge=0)
    page_size: int = Field(2500, ge=1, le=2500)
    retry_attempts: int = Field(6, ge=1, le=20)
    retry_base_delay_s: float = Field(1.0, ge=0)
    retry_max_delay_s: float = Field(32.0, ge=0)
    http_timeout_s: float = Field(30.0, gt=0)
    notify_url: str | None = None
    notify_debounce_s: int = Field(60, ge=0)
    channel_ttl_hours: int = Field(168, ge=1)
    channel_renew_hours: int = Field(24, ge=1)
    events_max_days: int = Field(366, ge=1)
    scopes: list[str] = Field(default_factory=lambda: ["https://www.googleapis.com/auth/calendar.events"], min_length=1)

    @field_validator("calendar_ids")
    @classmethod
    def _calendars_once_each(cls, v: list[str]) -> list[str]:
        # No calendar: every run synced nothing and said ok. Twice: two runs of one calendar per sync.
        if any(not cal.strip() for cal in v):
            raise ValueError("an empty calendar id (use \"primary\" or the calendar's address)")
        if twice := sorted({cal for cal in v if v.count(cal) > 1}):
            raise ValueError(f"lists {', '.join(twice)} twice")
        return v

    @model_validator(mode="after")
    def _renewal_inside_lifetime(self) -> "CalendarSection":
        if self.channel_renew_hours >= self.channel_ttl_hours:
            raise ValueError("channel_renew_hours must be less than channel_ttl_hours (every watch run would reopen every channel)")
        return self


class MigrateSection(_Section):
    database: str = "prod"
    sql_dir: str | None = None
    command: str | None = None
    rehearse_on: str = "scratch"
    single_transaction: bool = False
    rehearsal_max_age_minutes: int = Field(60, ge=1)
    lock_timeout: str = "5s"
    statement_timeout: str = "15min"
    command_timeout_minutes: int = Field(30, ge=1)  # a `command` migration is killed after this
    command_inputs: list[str] = Field(default_factory=list)  # globs whose files a rehearsal of `command` covers
    rules: list[Rule] = Field(default_factory=list)
    # tables ("users", "public.users") or columns ("users.legacy_flag") whose existing data the
    # migration may delete or overwrite; any other loss the rehearsal shows fails it
    allow_data_loss: list[str] = Field(default_factory=list)
    # the schemas a rehearsal clones and compares (None: every user schema of the target); on a
    # hosted platform, those the migrations change and reference (Supabase: public, auth, storage)
    schemas: list[str] | None = Field(default=None, min_length=1)

    @field_validator("allow_data_loss")
    @classmethod
    def _objects(cls, v: list[str]) -> list[str]:
        for name in v:
            if not _OBJECT.fullmatch(name):
                raise ValueError(f"{name!r} is not a table or column (table, schema.table, table.column or schema.table.column)")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> "MigrateSection":
        if self.sql_dir and self.command:
            raise ValueError("set either sql_dir or command, not both")
        return self


class Config(_Section):
    databases: dict[str, str] = Field(
        default_factory=lambda: {
            "dev": "DEV_DATABASE_URL",
            "staging": "STAGING_DATABASE_URL",
            "prod": "PROD_DATABASE_URL",
        }
    )
    storage: StorageSection = Field(default_factory=StorageSection)
    backup: BackupSection = Field(default_factory=BackupSection)
    content_sync: ContentSyncSection = Field(default_factory=ContentSyncSection)
    staging_clone: StagingCloneSection = Field(default_factory=StagingCloneSection)
    validate_: ValidateSection = Field(default_factory=ValidateSection, alias="validate")
    calendar: CalendarSection = Field(default_factory=CalendarSection)
    migrate: MigrateSection = Field(default_factory=MigrateSection)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("databases")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        for name, env in v.items():
            if not _NAME.fullmatch(name):
                raise ValueError(f"database name {name!r} must be a simple identifier")
            if not isinstance(env, str) or not _ENV_NAME.fullmatch(env):
                raise ValueError(
                    f"databases.{name} must name an environment variable (e.g. \"PROD_DATABASE_URL\"), not a URL"
                )
        return v

    @model_validator(mode="after")
    def _known_databases(self) -> "Config":
        """Database names used by the sections the file sets must exist.

        Sections left to their defaults are not checked here (their default
        names may not be configured); using them fails later with a clear
        "unknown database" error.
        """
        given = self.model_fields_set
        refs: list[tuple[str, str | None]] = []
        if "content_sync" in given:
            refs += [("content_sync.source", self.content_sync.source), ("content_sync.target", self.content_sync.target)]
        if "staging_clone" in given:
            refs += [("staging_clone.source", self.staging_clone.source), ("staging_clone.target", self.staging_clone.target)]
        if "calendar" in given:
            refs.append(("calendar.database", self.calendar.database))
        if "migrate" in given:
            refs += [("migrate.database", self.migrate.database), ("migrate.rehearse_on", self.migrate.rehearse_on)]
        if "backup" in given:
            refs += [(f"backup.databases[{i}]", d) for i, d in enumerate(self.backup.databases)]
        refs.append(("validate.database", self.validate_.database))
        refs += [(f"validate.rules[{i}].database", r.database) for i, r in enumerate(self.validate_.rules)]
        for key, name in refs:
            if name is not None and name not in self.databases:
                raise ValueError(f"{key} = {name!r} is not one of [databases] ({', '.join(self.databases)})")
        return self


def _format_validation_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = ".".join("validate" if p == "validate_" else str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"{source}: {loc}: {msg}" if loc else f"{source}: {msg}"


class Settings:
    """The validated config plus the environment it resolves against."""

    def __init__(self, config: Config, *, base_dir: Path, source: str, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.base_dir = base_dir
        self.source = source
        self.env: Mapping[str, str] = env if env is not None else os.environ

    def database_names(self) -> list[str]:
        return list(self.config.databases)

    def check_database(self, name: str) -> str:
        """Validate a database name given by a caller (HTTP body, CLI flag)."""
        if name not in self.config.databases:
            raise ConfigError(f"unknown database {name!r}; configured: {', '.join(self.config.databases)}")
        return name

    def database_url(self, name: str) -> str:
        """The URL of a configured database, from its environment variable."""
        self.check_database(name)
        var = self.config.databases[name]
        url = self.env.get(var, "").strip()
        if not url:
            raise ConfigError(f"database {name!r}: environment variable {var} is not set")
        remember(url)  # whatever its variable is called, its password is redacted everywhere
        return url

    def secret(self, var: str) -> str | None:
        """A secret setting: its value is redacted from every text from now on."""
        value = self.env.get(var, "").strip()
        remember(value)
        return value or None

    def public(self, var: str) -> str | None:
        """A setting that is not secret (a public URL): shown as it is."""
        return self.env.get(var, "").strip() or None

    def resolve_path(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else (self.base_dir / p)

    @cached_property
    def storage(self):  # -> Storage (imported lazily: GCS client is heavy)
        from .storage import open_storage

        return open_storage(self.config.storage.url, base_dir=self.base_dir)


def parse_config(text: str, *, source: str = DEFAULT_CONFIG_FILE) -> Config:
    return _validate(parse_toml(text, source=source), source)


def _nul_at(value: Any, path: str = "") -> str | None:
    """Where a NUL character is in the parsed config (a dotted path), if anywhere."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        where = f"{path}.{key}" if path else str(key)
        if "\x00" in str(key):
            return where
        if found := _nul_at(item, where):
            return found
    return None


def _validate(data: dict[str, Any], source: str) -> Config:
    # TOML allows "\u0000"; libpq sends SQL as a C string, so what follows a NUL in a rule, a table name or
    # any text that reaches a query would silently never run: the config is refused, naming the key
    if where := _nul_at(data):
        shown = where.replace("\x00", "\\u0000")
        raise ConfigError(f"{source}: {shown}: contains a NUL character, which PostgreSQL cannot take")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None


def load_settings(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Load ``path``, else ``$SAFESYNC_CONFIG``, else ``./safesync.toml``;
    with no file at all the built-in defaults apply."""
    env = env if env is not None else os.environ
    explicit = path or env.get(CONFIG_ENV)
    file = Path(explicit) if explicit else Path(DEFAULT_CONFIG_FILE)
    if not file.exists():
        if explicit:
            raise ConfigError(f"config file {file} does not exist")
        return Settings(Config(), base_dir=Path.cwd(), source="(defaults)", env=env)
    return Settings(_validate(read_toml_file(file), str(file)), base_dir=file.resolve().parent, source=str(file), env=env)
