"""Preflight checks: will this setup work, and is it safe?

The generic checks (config, secrets, databases, tools, storage):
``safesync doctor`` runs all of them plus each job's own (content sync's
tables and privileges live with that job and are passed to ``run_all``);
jobs run a fast subset (``quick``) before they write anything. Each check yields ``Check`` rows —
ok / warn / fail with one line of detail and one of advice — and never
prints a secret (only whether it is present and well-formed).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Callable, Iterable, Iterator

from .auth import QSTASH_LEEWAY_S, configured_secret
from .config import Settings
from .db import connect
from .errors import ConfigError, DatabaseError, SafesyncError
from .identity import Identity, identify
from .log import redact
from .pgtools import find_tool, supports_compression

OK, WARN, FAIL = "ok", "warn", "fail"
MARK = {OK: "✓", WARN: "!", FAIL: "✗"}


@dataclass(frozen=True)
class Check:
    area: str
    name: str
    status: str
    detail: str
    advice: str = ""

    def row(self) -> dict[str, str]:
        return {"": MARK[self.status], **{k: v for k, v in asdict(self).items() if k != "status"}}


@dataclass
class DbFacts:
    name: str
    url: str
    version: int
    user: str
    identity: Identity | None = None


# --- environment and secrets -------------------------------------------------


def check_http_settings(settings: Settings) -> Iterator[Check]:
    """What the HTTP layer reads from the environment on every request."""
    from .http import body_limit

    try:
        body_limit(settings.env)
    except ConfigError as exc:
        yield Check("config", "SAFESYNC_MAX_BODY_BYTES", FAIL, exc.message, "every HTTP request is refused (400) until it is fixed or unset")


def check_secrets(settings: Settings) -> Iterator[Check]:
    env = settings.env
    current, following = configured_secret(env, "QSTASH_CURRENT_SIGNING_KEY"), configured_secret(env, "QSTASH_NEXT_SIGNING_KEY")
    token = configured_secret(env, "SAFESYNC_API_TOKEN")
    if not (current or token):
        yield Check("secrets", "authentication", FAIL, "neither QStash signing keys nor SAFESYNC_API_TOKEN is set", "every request would be rejected (401): set at least one")
    if current or following:
        if not (current and following):
            yield Check("secrets", "QStash keys", WARN, "only one of QSTASH_CURRENT_SIGNING_KEY / QSTASH_NEXT_SIGNING_KEY is set", "set both: QStash signs with either during key rotation")
        elif min(len(current), len(following)) < 16:
            yield Check("secrets", "QStash keys", FAIL, "a QStash signing key is shorter than 16 characters", "copy both keys from the QStash console")
        else:
            yield Check("secrets", "QStash keys", OK, "current and next signing keys present")
        public = env.get("SAFESYNC_PUBLIC_URL", "").strip()
        if not public:
            yield Check("secrets", "public URL", FAIL, "SAFESYNC_PUBLIC_URL is not set", "QStash signatures cannot be checked without the URL they were signed for")
        elif not public.startswith("https://"):
            yield Check("secrets", "public URL", WARN, f"SAFESYNC_PUBLIC_URL is {public!r}, not https", "QStash delivers to the https URL; signatures name it exactly")
        else:
            yield Check("secrets", "public URL", OK, public)
    else:
        yield Check("secrets", "QStash keys", WARN, "not set: scheduled runs cannot be authenticated", "set QSTASH_CURRENT_SIGNING_KEY and QSTASH_NEXT_SIGNING_KEY to use schedules")
    for var, minimum, purpose in (("SAFESYNC_API_TOKEN", 24, "curl/CI callers"), ("SAFESYNC_ADMIN_TOKEN", 24, "admin actions")):
        value = configured_secret(env, var)
        if not value:
            yield Check("secrets", var, WARN, f"not set ({purpose} disabled)")
        elif len(value) < minimum:
            yield Check("secrets", var, FAIL, f"shorter than {minimum} characters", "use a long random value, e.g. `openssl rand -hex 32`")
        elif var == "SAFESYNC_ADMIN_TOKEN" and value == token:
            yield Check("secrets", var, FAIL, "the same value as SAFESYNC_API_TOKEN: every API caller is an admin", "give the admin token its own value: `openssl rand -hex 32`")
        else:
            yield Check("secrets", var, OK, "present")
    if configured_secret(env, "VERCEL_WEBHOOK_SECRET"):
        yield Check("secrets", "VERCEL_WEBHOOK_SECRET", OK, "present")
    else:
        yield Check("secrets", "VERCEL_WEBHOOK_SECRET", WARN, "not set (Vercel deploy webhooks will be rejected)")
    yield from check_backup_identity(settings)


def check_backup_identity(settings: Settings) -> Iterator[Check]:
    """With ``backup.encrypt = "age"``: whether this environment can read
    the backups it makes (creating them needs only the public keys)."""
    cfg = settings.config.backup
    if cfg.encrypt != "age":
        return
    from . import agefile  # cryptography only when backups are encrypted

    recipients = [r.fingerprint for r in agefile.parse_recipients(cfg.age_recipients)]
    if not (settings.env.get(agefile.IDENTITY_ENV, "").strip() or settings.env.get(agefile.IDENTITY_FILE_ENV, "").strip()):
        yield Check("secrets", "backup identity", WARN, f"backups are encrypted with age; neither {agefile.IDENTITY_ENV} nor {agefile.IDENTITY_FILE_ENV} is set here",
                    "creating backups works; verify, restore drill and restore need the private key in this environment")
        return
    try:
        identities = agefile.load_identities(settings.env, purpose="reading encrypted backups")
    except ConfigError as exc:
        yield Check("secrets", "backup identity", FAIL, exc.message, "fix the identity: verify and restore would refuse")
        return
    opens = [i.recipient for i in identities if i.recipient in recipients]
    if opens:
        yield Check("secrets", "backup identity", OK, f"opens backups encrypted for {', '.join(opens)}")
    else:
        yield Check("secrets", "backup identity", FAIL, f"the identity is for {', '.join(i.recipient for i in identities)}, none of backup.age_recipients",
                    "set the private key of one of backup.age_recipients: new backups could not be verified or restored")


# --- databases ---------------------------------------------------------------


def probe_database(settings: Settings, name: str) -> tuple[Check, DbFacts | None]:
    try:
        url = settings.database_url(name)
    except ConfigError as exc:
        return Check("databases", name, FAIL, exc.message, f"export {settings.config.databases[name]}=postgresql://…"), None
    try:
        with connect(url, connect_timeout=5) as conn:
            user, now = conn.execute("select current_user, now()").fetchone()
            local = datetime.now(timezone.utc)
            facts = DbFacts(name, url, conn.info.server_version, user, identify(conn, url))
    except SafesyncError as exc:
        return Check("databases", name, FAIL, exc.message, "check the URL, network access and that the server is up"), None
    skew = abs((now - local).total_seconds())
    version = f"{facts.version // 10000}.{facts.version % 10000}"
    if skew > QSTASH_LEEWAY_S:
        return Check("databases", name, FAIL, f"PostgreSQL {version} as {user}; clock differs by {skew:.0f}s", "fix NTP: signature checks allow only a few seconds of skew"), facts
    return Check("databases", name, OK, f"PostgreSQL {version} as {user}; clock skew {skew:.1f}s"), facts


def _kept_apart(settings: Settings) -> list[tuple[str, str, str]]:
    """Pairs of names a job refuses to see as one database, and which job."""
    config = settings.config
    cs, sc, mg = config.content_sync, config.staging_clone, config.migrate
    protected = list(dict.fromkeys([*config.backup.databases, cs.target, "prod"]))
    pairs = [(cs.source, cs.target, "content sync source and target")]
    pairs += [(sc.target, n, "staging clone target and its source" if n == sc.source else f"staging clone target and protected {n}") for n in [sc.source, *protected] if n != sc.target]
    pairs += [(mg.rehearse_on, n, f"migrate.rehearse_on and {n}") for n in [mg.database, *protected] if n != mg.rehearse_on]
    return pairs


def check_aliases(settings: Settings, facts: dict[str, DbFacts]) -> Iterator[Check]:
    """Config names that reach the same database (``shared.identity``): a
    failure when a job keeps those two apart (it would refuse to run), a
    warning otherwise."""
    groups: list[list[str]] = []
    facts = {name: fact for name, fact in facts.items() if fact.identity is not None}
    for name, fact in facts.items():
        group = next((g for g in groups if facts[g[0]].identity.same_database(fact.identity)), None)
        if group is None:
            groups.append([name])
        else:
            group.append(name)
    shared = [g for g in groups if len(g) > 1]
    if not shared:
        if len(facts) > 1:
            yield Check("databases", "distinct", OK, f"the {len(facts)} reachable names are {len(facts)} different databases")
        return
    apart = _kept_apart(settings)
    for group in shared:
        clashes = [why for a, b, why in apart if a in group and b in group]
        label = " = ".join(group)
        where = facts[group[0]].identity.describe()
        if clashes:
            yield Check("databases", f"same database: {label}", FAIL, f"{where}; refused by: {'; '.join(clashes)}", "point each name at its own database URL")
        else:
            yield Check("databases", f"same database: {label}", WARN, where, "two names for one database: guards treat both as that database")


def check_tools(servers: Iterable[DbFacts]) -> Iterator[Check]:
    newest = max((f.version // 10000 for f in servers), default=None)
    for name in ("pg_dump", "pg_restore"):
        try:
            tool = find_tool(name, at_least=newest, prefer="zstd")  # as backups choose them
        except ConfigError as exc:
            yield Check("tools", name, FAIL, exc.message, f"install {name} >= {newest or 'the servers’ version'} or set PG_BIN")
            continue
        zstd = "zstd backups" if supports_compression(tool, "zstd") else "no zstd: backups are gzip:1"
        yield Check("tools", name, OK, f"{tool.label}: {tool.reason}; {zstd}")


# --- storage -----------------------------------------------------------------


def check_storage(settings: Settings) -> Iterator[Check]:
    storage = settings.storage
    key = f"doctor/probe-{uuid.uuid4().hex}"
    payload = f"safesync doctor {time.time()}".encode()
    try:
        storage.put(key, payload)
        if storage.get_bytes(key) != payload:
            raise RuntimeError("read back different bytes")
        storage.delete(key)
        if storage.exists(key):
            raise RuntimeError("deleted object still exists")
        yield Check("storage", "read/write/delete", OK, storage.describe())
    except Exception as exc:
        yield Check("storage", "read/write/delete", FAIL, f"{storage.describe()}: {redact(str(exc))}", "check the folder's permissions or the bucket's IAM")
        return
    bucket_settings = getattr(storage, "bucket_settings", None)
    if bucket_settings:
        try:
            facts = bucket_settings()
        except Exception as exc:
            yield Check("storage", "bucket settings", WARN, f"cannot read: {redact(str(exc))}")
            return
        if not facts["versioning"]:
            yield Check("storage", "versioning", WARN, "bucket versioning is off", "enable it: a deleted or overwritten backup stays recoverable (infra/bucket.md)")
        else:
            yield Check("storage", "versioning", OK, "on")
        if not facts["lifecycle_rules"]:
            yield Check("storage", "lifecycle", WARN, "no lifecycle rule", "add one as a second safety net behind prune (infra/bucket.md)")
        else:
            yield Check("storage", "lifecycle", OK, f"{facts['lifecycle_rules']} rule(s)")


# --- entry points ----------------------------------------------------------------


JobChecks = Callable[[Settings, dict[str, DbFacts]], Iterable[Check]]


def run_all(settings: Settings, *job_checks: JobChecks) -> list[Check]:
    """Every generic check, then each job's own (``job_checks``: given the
    databases reached; doctor passes content sync's privilege checks)."""
    checks: list[Check] = [Check("config", "file", OK, settings.source)]
    checks += check_http_settings(settings)
    checks += check_secrets(settings)
    facts: dict[str, DbFacts] = {}
    for name in settings.database_names():
        check, fact = probe_database(settings, name)
        checks.append(check)
        if fact:
            facts[name] = fact
    checks += check_aliases(settings, facts)
    checks += check_tools(facts.values())
    checks += check_storage(settings)
    for more in job_checks:
        checks += more(settings, facts)
    return checks


def quick(settings: Settings, databases: Iterable[str], *, tools: bool = False) -> None:
    """The fast subset a job runs before writing: its databases configured,
    reachable and with a sane clock; with ``tools``, pg_dump/pg_restore new
    enough for them. Raises on the first failure."""
    facts = []
    for name in databases:
        settings.database_url(name)  # a missing env var is a ConfigError (exit 2 / 400)
        check, fact = probe_database(settings, name)
        if check.status == FAIL:
            raise DatabaseError(f"preflight: database {name}: {check.detail}")
        facts.append(fact)
    if tools:
        for check in check_tools(facts):
            if check.status == FAIL:
                raise ConfigError(f"preflight: {check.detail}")
