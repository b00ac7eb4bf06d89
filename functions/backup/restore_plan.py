"""Which entries of a dump the restoring role may restore into a target,
decided before anything is touched.

A hosted database's user is no superuser: Supabase's ``postgres`` cannot
create event triggers or most extensions, cannot run ``ALTER DEFAULT
PRIVILEGES FOR ROLE supabase_admin`` (not a member), cannot drop schema
``auth`` (owned by ``supabase_admin``) and cannot make ``supabase_admin``
the owner of anything. A whole-database dump of such a project holds all
of these. Each entry is therefore one of:

- **restored** — the role may (re)create it, with its owner when it may
  assign that owner;
- **kept** — it already exists on the target and the role may not replace
  it (the platform's schemas, event triggers, extensions, other roles'
  default privileges): left as it is, and listed;
- **not restorable** — the role can neither create it nor find it on the
  target (an event trigger without superuser, an extension that needs
  superuser, default privileges of a role it is not a member of, an owner
  it may not assign); entries depending on one are not restorable either.

A restore refuses (nothing touched) when any entry is not restorable, or
when objects would lose their owner — unless ``--no-owner`` says so
explicitly (then the restoring role owns everything, and the check after
the restore reports each table its former owner can no longer read). A
restore drill into an empty scratch database leaves the not restorable
entries out and lists them; schemas whose owner it may not assign are
created owned by the restoring role first, so their contents restore.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from .toc import TocEntry

ATTACHED = ("COMMENT", "ACL", "SECURITY LABEL")  # about another entry's object
HARMLESS = ("ENCODING", "STDSTRINGS", "SEARCHPATH", "DATABASE", "DATABASE PROPERTIES")
DEFAULT_ACL_TYPES = {"TABLES": "r", "SEQUENCES": "S", "FUNCTIONS": "f", "TYPES": "T", "SCHEMAS": "n"}
RELATION_TYPES = ("TABLE", "VIEW", "MATERIALIZED VIEW", "SEQUENCE", "FOREIGN TABLE")
ROUTINE_TYPES = ("FUNCTION", "PROCEDURE", "AGGREGATE")
TYPE_TYPES = ("TYPE", "DOMAIN")


@dataclass
class RestorePlan:
    role: str
    kept: dict[int, str] = field(default_factory=dict)  # entry id -> why it is left as on the target
    blocked: dict[int, str] = field(default_factory=dict)  # entry id -> what is missing
    owners: dict[str, list[str]] = field(default_factory=dict)  # owner it may not assign -> entries
    precreate_schemas: list[str] = field(default_factory=list)  # drill: created owned by the role
    table_owners_lost: bool = False  # drill: a table's owner cannot be assigned

    def schema_users(self, schema: str) -> list[str]:
        """Owners of restored objects in ``schema`` (a pre-created schema
        lets them create there, as the dump's grants will later)."""
        return sorted({e.owner for i, e in self.entries.items() if e.schema == schema and e.owner and i not in self.left_out})
    entries: dict[int, TocEntry] = field(default_factory=dict)

    @property
    def left_out(self) -> set[int]:
        return set(self.kept) | set(self.blocked)

    def kept_rows(self) -> list[str]:
        return [f"{self.entries[i]}: {why}" for i, why in sorted(self.kept.items())]

    def blocked_rows(self) -> list[str]:
        return [f"{self.entries[i]}: {why}" for i, why in sorted(self.blocked.items())]

    def owner_rows(self) -> list[str]:
        return [
            f"{owner} ({len(items)} object(s): {', '.join(items[:5])}{' …' if len(items) > 5 else ''})"
            for owner, items in sorted(self.owners.items())
        ]


@dataclass
class _Target:
    """What the target looks like to the restoring role."""

    role: str
    superuser: bool
    may_create: bool
    actable: dict[str, bool]  # role -> may act as it (missing roles absent)
    schemas: dict[str, str]  # name -> owner
    extensions: set[str]
    event_triggers: set[str]
    publications: dict[str, str]  # name -> owner
    default_acls: set[tuple[str, str, str]]  # (role, schema, objtype)
    creatable_extensions: set[str]
    existing_owner: dict[int, str]  # entry id -> owner of the object already on the target


def _inspect(conn: psycopg.Connection, entries: list[TocEntry]) -> _Target:
    role, superuser, may_create = conn.execute(
        "select current_user, rolsuper, has_database_privilege(current_database(), 'CREATE') from pg_roles where rolname = current_user"
    ).fetchone()
    owners = sorted({e.owner for e in entries if e.owner})
    set_option = "and pg_has_role(current_user, r.oid, 'SET')" if conn.info.server_version >= 160000 else ""
    actable = dict(conn.execute(f"select r.rolname, pg_has_role(current_user, r.oid, 'USAGE') {set_option} from pg_roles r where r.rolname = any(%s)", [owners]))
    extensions = [e.tag for e in entries if e.type == "EXTENSION"]
    creatable = {
        name
        for name, su, trusted in conn.execute(
            """select v.name, v.superuser, v.trusted from pg_available_extension_versions v
               join pg_available_extensions a on a.name = v.name and a.default_version = v.version where v.name = any(%s)""",
            [extensions],
        )
        if superuser or (trusted or not su) and may_create
    }
    # Owners of objects the dump would replace, for kinds that can be named
    # from the entry alone (schema + tag).
    probes = [(e.id, e.type, e.schema, _signature(e.type, e.tag)) for e in entries
              if e.type in RELATION_TYPES + ROUTINE_TYPES + TYPE_TYPES and e.schema != "-"]
    # grants and comments on objects the dump does not list (an extension's members)
    listed = {e.id for e in entries}
    for e in entries:
        if e.type in ATTACHED and e.schema != "-" and e.depends and not set(e.depends) & listed:
            kind, _, name = e.tag.partition(" ")
            if kind in RELATION_TYPES + ROUTINE_TYPES + TYPE_TYPES:
                probes.append((e.id, kind, e.schema, _signature(kind, name)))
    existing_owner: dict[int, str] = {}
    if probes:
        conn.execute("select set_config('search_path', '', true)")  # types qualified as pg_dump writes them
        rows = conn.execute(
            """select p.id, coalesce(
                   (select pg_get_userbyid(c.relowner) from pg_class c join pg_namespace n on n.oid = c.relnamespace
                    where p.kind = any(%(rel)s) and n.nspname = p.schema and c.relname = p.name),
                   (select pg_get_userbyid(f.proowner) from pg_proc f join pg_namespace n on n.oid = f.pronamespace
                    where p.kind = any(%(fn)s) and n.nspname = p.schema and f.proname || '(' || coalesce(
                          (select string_agg(format_type(a, null), ', ' order by o) from unnest(f.proargtypes) with ordinality u(a, o)),
                          '') || ')' = p.name limit 1),
                   (select pg_get_userbyid(y.typowner) from pg_type y join pg_namespace n on n.oid = y.typnamespace
                    where p.kind = any(%(ty)s) and n.nspname = p.schema and y.typname = p.name))
               from unnest(%(ids)s::int[], %(kinds)s::text[], %(schemas)s::text[], %(names)s::text[]) as p(id, kind, schema, name)""",
            {"rel": list(RELATION_TYPES), "fn": list(ROUTINE_TYPES), "ty": list(TYPE_TYPES),
             "ids": [p[0] for p in probes], "kinds": [p[1] for p in probes],
             "schemas": [p[2] for p in probes], "names": [p[3] for p in probes]},
        )
        existing_owner = {i: owner for i, owner in rows if owner}
    return _Target(
        role=role,
        superuser=bool(superuser),
        may_create=bool(may_create),
        actable={k: bool(v) for k, v in actable.items()},
        schemas=dict(conn.execute("select nspname, pg_get_userbyid(nspowner) from pg_namespace")),
        extensions={r[0] for r in conn.execute("select extname from pg_extension")},
        event_triggers={r[0] for r in conn.execute("select evtname from pg_event_trigger")},
        publications=dict(conn.execute("select pubname, pg_get_userbyid(pubowner) from pg_publication")),
        default_acls={tuple(r) for r in conn.execute(
            "select pg_get_userbyid(defaclrole), coalesce(defaclnamespace::regnamespace::text, '-'), defaclobjtype::text from pg_default_acl"
        )},
        creatable_extensions=creatable,
        existing_owner=existing_owner,
    )


def _signature(kind: str, tag: str) -> str:
    """``name(intype, …)`` of a routine's tag (pg_dump writes OUT arguments
    with their names in some tags and not in others); other tags as they are."""
    if kind not in ROUTINE_TYPES or not tag.endswith(")"):
        return tag
    name, _, args = tag[:-1].partition("(")
    kept = []
    for arg in (a.strip() for a in args.split(", ") if a.strip()):
        if arg.startswith("OUT "):
            continue
        for mode in ("INOUT ", "IN ", "VARIADIC "):
            arg = arg.removeprefix(mode)
        kept.append(arg)
    return f"{name}({', '.join(kept)})"


def plan_restore(conn: psycopg.Connection, entries: list[TocEntry], *, no_owner: bool = False, drill: bool = False) -> RestorePlan:
    """Classify every entry for a restore (or a drill) into ``conn``'s database."""
    t = _inspect(conn, entries)
    plan = RestorePlan(t.role, entries={e.id: e for e in entries})
    may = lambda role: bool(t.actable.get(role))  # noqa: E731

    def missing(role: str) -> str:
        return f"{t.role} is not a member of role {role}" if role in t.actable else f"role {role} does not exist on the target"

    for e in entries:
        if e.type in HARMLESS:
            continue
        if e.type in ATTACHED:
            if e.depends and not set(e.depends) & set(plan.entries):
                _unlisted_object(plan, t, e, entries, may, missing)
            continue  # otherwise decided with the object it is about, below
        if e.type in _CONTAINED:
            _container(plan, t, e, drill, no_owner, may, missing)
            continue
        if e.type == "EXTENSION":
            if e.tag in t.extensions:
                plan.kept[e.id] = "installed on the target: kept as it is"
            elif e.tag not in t.creatable_extensions:
                plan.blocked[e.id] = "creating it needs superuser on this server (enable it on the target first)"
            continue
        if e.type == "EVENT TRIGGER" and not t.superuser:
            if e.tag in t.event_triggers:
                plan.kept[e.id] = "exists on the target; replacing it needs superuser"
            else:
                plan.blocked[e.id] = "creating event triggers needs superuser"
            continue
        if e.type == "DEFAULT ACL":
            objtype = DEFAULT_ACL_TYPES.get(e.tag.rsplit(" ", 1)[-1], "?")
            if not may(e.owner):
                if (e.owner, e.schema, objtype) in t.default_acls:
                    plan.kept[e.id] = f"the target has its own (not compared): ALTER DEFAULT PRIVILEGES FOR ROLE {e.owner} needs membership ({missing(e.owner)})"
                else:
                    plan.blocked[e.id] = f"ALTER DEFAULT PRIVILEGES FOR ROLE {e.owner} needs membership ({missing(e.owner)})"
            continue
        if e.type in ("PUBLICATION TABLE", "PUBLICATION TABLES IN SCHEMA"):
            publication = e.tag.split(" ", 1)[0]
            owner = t.publications.get(publication, e.owner)
            if e.type == "PUBLICATION TABLES IN SCHEMA" and not t.superuser:
                plan.blocked[e.id] = "adding TABLES IN SCHEMA to a publication needs superuser"
            elif not may(owner):
                plan.blocked[e.id] = f"adding a table to publication {publication} needs its owner's privileges ({missing(owner)})"
            continue
        there = t.existing_owner.get(e.id)
        if there is not None and not may(there):
            plan.kept[e.id] = f"exists on the target owned by {there}: {t.role} may not replace it ({missing(there)})"
        elif e.owner and not may(e.owner) and not no_owner:
            _owner_problem(plan, e, drill, missing(e.owner))

    _propagate(plan, entries, lambda schema: may(t.schemas.get(schema, "")))
    return plan


def _unlisted_object(plan: RestorePlan, t: _Target, e: TocEntry, entries: list[TocEntry], may, missing) -> None:
    """A grant or comment on an object the dump does not list: a member of
    an extension. On the target already: restored if the role acts as its
    owner, else kept. Not there yet: it comes with the extensions the dump
    creates in that schema — restorable only if all of those are."""
    if e.tag.startswith("SCHEMA "):  # e.g. public, which pg_dump never lists itself
        name = e.tag[7:].strip('"')
        if name not in t.schemas:
            plan.blocked[e.id] = f"schema {name} is neither in the dump nor on the target"
        elif not may(t.schemas[name]):
            plan.kept[e.id] = f"on schema {name}, owned by {t.schemas[name]} on the target ({missing(t.schemas[name])})"
        return
    there = t.existing_owner.get(e.id)
    if there is not None:
        if not may(there):
            plan.kept[e.id] = f"on an object owned by {there} on the target ({missing(there)})"
        return
    schema_ids = {x.id for x in entries if x.type == "SCHEMA" and x.tag == e.schema}
    extensions = [x for x in entries if x.type == "EXTENSION" and set(x.depends) & schema_ids]
    blocked = next((x for x in extensions if x.id in plan.blocked), None)
    if blocked is not None or not extensions:
        plan.blocked[e.id] = f"about a member of {blocked or 'an extension'} in schema {e.schema}, which is not restored"


# Objects of the database itself (CREATE on the database), kept when the
# target has one by that name: what of them is restored then.
_CONTAINED = {"SCHEMA": "its contents are restored", "PUBLICATION": "memberships are restored"}


def _container(plan: RestorePlan, t: _Target, e: TocEntry, drill: bool, no_owner: bool, may, missing) -> None:
    """A schema or a publication: kept if the target has it, else created —
    which needs CREATE on the database and, unless ``no_owner``, its owner.
    A drill creates a schema whose owner cannot be assigned owned by the
    role instead, so its contents are still restored."""
    existing = t.schemas if e.type == "SCHEMA" else t.publications
    if e.tag in existing:
        plan.kept[e.id] = f"exists on the target (owner {existing[e.tag]}); {_CONTAINED[e.type]}"
    elif not t.may_create:
        plan.blocked[e.id] = f"{t.role} lacks CREATE on the database"
    elif e.owner and not may(e.owner) and not no_owner:
        if drill and e.type == "SCHEMA":
            plan.precreate_schemas.append(e.tag)
            plan.kept[e.id] = f"created owned by {t.role} ({missing(e.owner)})"
        else:
            _owner_problem(plan, e, drill, missing(e.owner))


def _owner_problem(plan: RestorePlan, e: TocEntry, drill: bool, why: str) -> None:
    if drill:
        plan.blocked[e.id] = f"its owner {e.owner} cannot be assigned ({why})"
        if e.type == "TABLE":
            plan.table_owners_lost = True
    else:
        plan.owners.setdefault(e.owner, []).append(str(e))


# Kept entries whose dependents are still restored: a kept schema's
# contents, a kept extension's users, a kept publication's memberships.
CONTAINERS = ("SCHEMA", "EXTENSION", "PUBLICATION")


def _propagate(plan: RestorePlan, entries: list[TocEntry], may_own_schema) -> None:
    """Follow dependencies: what depends on a not restorable entry is not
    restorable; what belongs to a kept object (its data, indexes, grants,
    comments) is kept with it; a kept schema's own grants and comment are
    kept unless the role acts as the schema's owner."""
    changed = True
    while changed:
        changed = False
        for e in entries:
            if e.id in plan.kept and e.type not in ("SCHEMA",):
                # what a kept object needs stays too: --clean could not drop it
                # (e.g. the function a kept event trigger calls)
                for d in e.depends:
                    dep = plan.entries.get(d)
                    if dep is not None and d not in plan.left_out and dep.type not in ("SCHEMA", "EXTENSION") + HARMLESS:
                        plan.kept[d] = f"{e} is kept as on the target and depends on it"
                        changed = True
            if e.id in plan.left_out or e.type in HARMLESS:
                continue
            deps = [plan.entries[d] for d in e.depends if d in plan.entries]
            blocked = next((d for d in deps if d.id in plan.blocked), None)
            kept = next((d for d in deps if d.id in plan.kept and (d.type not in CONTAINERS or e.type in ATTACHED)), None)
            if blocked is not None:
                plan.blocked[e.id] = f"depends on {blocked}, which is not restored"
            elif kept is not None:
                if kept.type == "SCHEMA" and (kept.tag in plan.precreate_schemas or may_own_schema(kept.tag)):
                    continue
                plan.kept[e.id] = f"belongs to {kept}, kept as on the target"
            else:
                continue
            changed = True


def unreadable_by_owner(conn: psycopg.Connection, entries: list[TocEntry], plan: RestorePlan) -> list[str]:
    """Restored tables whose owner in the dump cannot read them now (e.g.
    after a ``--no-owner`` restore: auth's tables belong to the restoring
    role and ``supabase_auth_admin`` — GoTrue — gets "permission denied")."""
    tables = [(e.schema, e.tag, e.owner) for e in entries if e.type == "TABLE" and e.owner and e.id not in plan.left_out]
    if not tables:
        return []
    rows = conn.execute(
        """select t.schema || '.' || t.name, t.owner
           from unnest(%s::text[], %s::text[], %s::text[]) as t(schema, name, owner)
           join pg_namespace n on n.nspname = t.schema join pg_class c on c.relnamespace = n.oid and c.relname = t.name
           where exists (select 1 from pg_roles where rolname = t.owner) and not has_table_privilege(t.owner, c.oid, 'SELECT')
           order by 1""",
        [[t[0] for t in tables], [t[1] for t in tables], [t[2] for t in tables]],
    )
    return [f"{label} (owner {owner})" for label, owner in rows]
