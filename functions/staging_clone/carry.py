"""What a clone carries over besides the dump's objects, and whether the
restoring role may.

A hosted database's user is not a superuser: on Supabase, ``postgres`` owns
``public`` but not ``auth`` or ``storage`` (``supabase_admin`` does), is a
member of ``supabase_auth_admin`` (owner of the auth tables) but not of
``supabase_admin``, and cannot create event triggers. So the clone never
drops a schema: it empties it object by object (every object is owned by a
role the restoring role acts as — checked here) and sets the schema's own
owner, comment and grants itself, when it may. What it may not change must
already be equal on both sides, otherwise the clone is refused naming the
object and the missing privilege — before anything is written:

- the schema's owner, grants and comment (needs the owner's privileges);
- default privileges (``ALTER DEFAULT PRIVILEGES FOR ROLE r``: needs
  membership in ``r``); equal ones are kept as they are, and the dump's
  copy of them is left out;
- extensions living in a cloned schema (creating one makes the restoring
  role its owner; most need superuser): an equal one is kept in place;
- event triggers calling a function in a cloned schema (dropped with the
  function; recreating one needs superuser);
- publication memberships of the cloned tables (dev's are re-created, with
  their column lists and row filters; needs the publication's owner).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from safesync.shared.report import first_few

DEFAULT_ACL_TYPES = {"r": "TABLES", "S": "SEQUENCES", "f": "FUNCTIONS", "T": "TYPES", "n": "SCHEMAS"}


@dataclass(frozen=True)
class SchemaState:
    name: str
    owner: str
    comment: str | None
    grants: tuple[tuple[str, str, bool], ...]  # (grantee|'PUBLIC', privilege, grantable), sorted


@dataclass(frozen=True)
class EventTrigger:
    name: str
    event: str
    tags: tuple[str, ...] | None
    function: str  # regprocedure text, schema-qualified
    enabled: str  # O | D | R | A
    owner: str


@dataclass(frozen=True)
class Membership:
    publication: str
    schema: str
    table: str
    columns: tuple[str, ...] | None
    row_filter: str | None


@dataclass
class Carry:
    """Everything the engine's scripts need beyond the dump."""

    superuser: bool = False
    schemas: list[SchemaState] = field(default_factory=list)  # dev's, one per cloned schema
    missing_schemas: list[str] = field(default_factory=list)  # created on the target
    manage_schema: dict[str, bool] = field(default_factory=dict)  # set owner/comment/grants ourselves?
    foreign_roles: list[str] = field(default_factory=list)  # default ACLs kept as on the target
    revoke_default_acls: list[tuple[str, str, str, str]] = field(default_factory=list)  # (role, schema, objtype, grantee)
    kept_extensions: list[str] = field(default_factory=list)
    drop_event_triggers: list[str] = field(default_factory=list)
    event_triggers: list[EventTrigger] = field(default_factory=list)  # dev's, re-created
    memberships: list[Membership] = field(default_factory=list)  # dev's
    schema_memberships: list[tuple[str, str]] = field(default_factory=list)  # dev's (publication, schema)
    create_publications: list[dict[str, Any]] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # "kept as on the target (equal)" notes for the report


def actable_roles(conn: psycopg.Connection, roles: list[str]) -> dict[str, bool]:
    """role → may the current user act as it (use its privileges and make
    it an object's owner)? Missing roles are absent from the answer."""
    set_option = "and pg_has_role(current_user, r.oid, 'SET')" if conn.info.server_version >= 160000 else ""
    rows = conn.execute(
        f"select r.rolname, pg_has_role(current_user, r.oid, 'USAGE') {set_option} from pg_roles r where r.rolname = any(%s)",
        [roles],
    )
    return {name: bool(ok) for name, ok in rows}


SCHEMA_STATE = """
    select n.nspname, pg_get_userbyid(n.nspowner), obj_description(n.oid, 'pg_namespace'),
           coalesce((select array_agg(array[coalesce(r.rolname, 'PUBLIC'), a.privilege_type, a.is_grantable::text]
                                      order by 1, 2, 3)
                     from aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
                     left join pg_roles r on r.oid = a.grantee where a.grantee <> n.nspowner), '{}')
    from pg_namespace n where n.nspname = any(%s) order by 1
"""

DEFAULT_ACLS = """
    select pg_get_userbyid(d.defaclrole), n.nspname, d.defaclobjtype::text,
           coalesce((select array_agg(x order by x) from (
               select coalesce(g.rolname, 'PUBLIC') || ':' || a.privilege_type || case when a.is_grantable then '*' else '' end as x
               from aclexplode(d.defaclacl) a left join pg_roles g on g.oid = a.grantee) s), '{}'),
           coalesce((select array_agg(distinct coalesce(g.rolname, 'PUBLIC'))
                     from aclexplode(d.defaclacl) a left join pg_roles g on g.oid = a.grantee), '{}')
    from pg_default_acl d join pg_namespace n on n.oid = d.defaclnamespace
    where n.nspname = any(%s) order by 1, 2, 3
"""

EXTENSIONS_INSIDE = """
    select e.extname, n.nspname, e.extversion, pg_get_userbyid(e.extowner)
    from pg_extension e join pg_namespace n on n.oid = e.extnamespace where n.nspname = any(%s) order by 1
"""

EVENT_TRIGGERS_INSIDE = """
    select t.evtname, t.evtevent, t.evttags, t.evtfoid::regprocedure::text, t.evtenabled::text, pg_get_userbyid(t.evtowner)
    from pg_event_trigger t join pg_proc p on p.oid = t.evtfoid join pg_namespace n on n.oid = p.pronamespace
    where n.nspname = any(%s) order by 1
"""

MEMBERSHIPS = """
    select p.pubname, n.nspname, c.relname,
           (select array_agg(a.attname order by a.attnum) from pg_attribute a
            where a.attrelid = r.prrelid and a.attnum = any(r.prattrs)),
           pg_get_expr(r.prqual, r.prrelid)
    from pg_publication_rel r join pg_publication p on p.oid = r.prpubid
    join pg_class c on c.oid = r.prrelid join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = any(%s) order by 1, 2, 3
"""

SCHEMA_MEMBERSHIPS = """
    select p.pubname, n.nspname from pg_publication_namespace pn join pg_publication p on p.oid = pn.pnpubid
    join pg_namespace n on n.oid = pn.pnnspid where n.nspname = any(%s) order by 1, 2
"""

PUBLICATIONS = """
    select p.pubname, pg_get_userbyid(p.pubowner), p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate, p.pubviaroot
    from pg_publication p where p.pubname = any(%s)
"""

# Objects in the schemas, with their owners: dropped on the target, created
# (then given their owner) from the dump.
OWNED_OBJECTS = """
    with inside as (select oid from pg_namespace where nspname = any(%(schemas)s)),
    objects(description, owner) as (
        select pg_describe_object('pg_class'::regclass, c.oid, 0), c.relowner from pg_class c
        where c.relnamespace in (select oid from inside) and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f', 'c')
          and not exists (select 1 from pg_depend e where e.classid = 'pg_class'::regclass and e.objid = c.oid and e.deptype = 'e')
        union all
        select pg_describe_object('pg_proc'::regclass, p.oid, 0), p.proowner from pg_proc p
        where p.pronamespace in (select oid from inside)
          and not exists (select 1 from pg_depend e where e.classid = 'pg_proc'::regclass and e.objid = p.oid and e.deptype = 'e')
        union all
        select pg_describe_object('pg_type'::regclass, t.oid, 0), t.typowner from pg_type t
        where t.typnamespace in (select oid from inside) and t.typtype in ('e', 'd', 'r', 'm', 'b')
          and not exists (select 1 from pg_depend e where e.classid = 'pg_type'::regclass and e.objid = t.oid and e.deptype in ('e', 'i'))
    )
    select r.rolname, array_agg(o.description order by o.description)
    from objects o join pg_roles r on r.oid = o.owner group by r.rolname order by 1
"""


def _schema_states(conn: psycopg.Connection, schemas: list[str]) -> dict[str, SchemaState]:
    return {
        name: SchemaState(name, owner, comment, tuple((g, p, grantable == "true") for g, p, grantable in grants))
        for name, owner, comment, grants in conn.execute(SCHEMA_STATE, [schemas])
    }


def plan_carry(source: psycopg.Connection, target: psycopg.Connection, schemas: list[str], problems: list[str]) -> Carry:
    """Inspect both sides; append a problem (naming object and privilege)
    for everything the restoring role cannot carry over."""
    me = target.execute("select current_user, rolsuper, has_database_privilege(current_database(), 'CREATE') from pg_roles where rolname = current_user").fetchone()
    user, superuser, may_create = me[0], bool(me[1]), bool(me[2])
    carry = Carry(superuser=superuser)
    dev_schemas, target_schemas = _schema_states(source, schemas), _schema_states(target, schemas)
    dev_acls = source.execute(DEFAULT_ACLS, [schemas]).fetchall()
    target_acls = target.execute(DEFAULT_ACLS, [schemas]).fetchall()
    dev_owned = dict(source.execute(OWNED_OBJECTS, {"schemas": schemas}).fetchall())
    target_owned = dict(target.execute(OWNED_OBJECTS, {"schemas": schemas}).fetchall())
    roles = sorted({s.owner for s in (*dev_schemas.values(), *target_schemas.values())} | {r[0] for r in (*dev_acls, *target_acls)} | set(dev_owned) | set(target_owned))
    may = actable_roles(target, roles)

    def cannot(role: str) -> str:
        return f"{user} is not a member of role {role}" if role in may else f"role {role} does not exist on the target"

    # The schemas themselves.
    for name in schemas:
        dev = dev_schemas.get(name)
        if dev is None:
            continue  # reported by plan_clone
        carry.schemas.append(dev)
        there = target_schemas.get(name)
        if there is None:
            carry.missing_schemas.append(name)
            carry.manage_schema[name] = True
            if not may_create:
                problems.append(f"schema {name} must be created on the target: {user} lacks CREATE on the database")
            elif not may.get(dev.owner):
                problems.append(f"schema {name} must be created owned by {dev.owner}: {cannot(dev.owner)}")
            continue
        manage = bool(may.get(there.owner)) and (there.owner == dev.owner or (bool(may.get(dev.owner)) and may_create))
        carry.manage_schema[name] = manage
        if not manage and there != dev:
            what = [a for a, x, y in (("owner", there.owner, dev.owner), ("comment", there.comment, dev.comment), ("grants", there.grants, dev.grants)) if x != y]
            problems.append(
                f"schema {name}: its {' and '.join(what)} differ from the source's and {user} may not change them "
                f"(owner {there.owner}: {cannot(there.owner)})"
            )
        elif not manage:
            carry.kept.append(f"schema {name}: owner, grants and comment kept as on the target (equal to the source's)")

    # Objects: every one dropped on the target and created from the dump
    # must be owned by a role the restoring role acts as.
    for side, owned in (("target (to drop)", target_owned), ("source (to create)", dev_owned)):
        for role, objects in owned.items():
            if not may.get(role):
                shown = first_few(objects)
                problems.append(f"{shown} on the {side} belong to {role}: {cannot(role)}")

    # Default privileges.
    def acl_key(row: tuple) -> tuple:
        return row[0], row[1], row[2]

    dev_by, target_by = {acl_key(r): r[3] for r in dev_acls}, {acl_key(r): r[3] for r in target_acls}
    for role in sorted({r[0] for r in (*dev_acls, *target_acls)}):
        if may.get(role):
            continue
        mine = {k: v for k, v in dev_by.items() if k[0] == role}
        theirs = {k: v for k, v in target_by.items() if k[0] == role}
        if mine != theirs:
            differing = sorted(f"{DEFAULT_ACL_TYPES.get(k[2], k[2]).lower()} in schema {k[1]}" for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
            problems.append(
                f"default privileges of role {role} ({', '.join(differing)}) differ from the source's and "
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {role} needs membership: {cannot(role)}"
            )
        else:
            carry.foreign_roles.append(role)
            if mine:
                carry.kept.append(f"default privileges of role {role} kept as on the target (equal to the source's; {cannot(role)})")
    for role, schema, objtype, _acl, grantees in target_acls:
        if may.get(role):
            carry.revoke_default_acls += [(role, schema, objtype, g) for g in grantees]

    _plan_extensions(source, target, schemas, user, superuser, carry, problems)
    _plan_event_triggers(source, target, schemas, superuser, carry, problems)
    _plan_publications(source, target, schemas, may, may_create, user, carry, problems)
    return carry


def _plan_extensions(source, target, schemas, user, superuser, carry: Carry, problems: list[str]) -> None:
    dev = {r[0]: r[1:] for r in source.execute(EXTENSIONS_INSIDE, [schemas])}
    there = {r[0]: r[1:] for r in target.execute(EXTENSIONS_INSIDE, [schemas])}
    trusted = {
        name: (bool(su), bool(tr))
        for name, su, tr in target.execute(
            """select v.name, v.superuser, v.trusted from pg_available_extension_versions v
               join pg_available_extensions a on a.name = v.name and a.default_version = v.version where v.name = any(%s)""",
            [list(dev)],
        )
    }
    for name, (schema, version, owner) in dev.items():
        if there.get(name) == (schema, version, owner):
            carry.kept_extensions.append(name)
            carry.kept.append(f"extension {name} {version} kept in place (equal to the source's)")
            continue
        needs_superuser, is_trusted = trusted.get(name, (True, False))
        if owner != user and not superuser:
            problems.append(f"extension {name} (schema {schema}) is owned by {owner} on the source; created by {user} it would be owned by {user}")
        elif needs_superuser and not is_trusted and not superuser:
            problems.append(f"extension {name} (schema {schema}) must be created on the target: that needs superuser")
    for name, (schema, _version, owner) in there.items():
        if name not in carry.kept_extensions and not superuser and owner != user:
            problems.append(f"extension {name} in schema {schema} on the target is owned by {owner}: {user} cannot drop it")


def _plan_event_triggers(source, target, schemas, superuser, carry: Carry, problems: list[str]) -> None:
    dev = [EventTrigger(n, e, tuple(t) if t else None, f, en, o) for n, e, t, f, en, o in source.execute(EVENT_TRIGGERS_INSIDE, [schemas])]
    there = [r[0] for r in target.execute(EVENT_TRIGGERS_INSIDE, [schemas])]
    if (dev or there) and not superuser:
        names = sorted({t.name for t in dev} | set(there))
        problems.append(
            f"event trigger(s) {', '.join(names)} call functions in the cloned schemas: replacing them needs superuser"
        )
    carry.event_triggers, carry.drop_event_triggers = dev, there


def _plan_publications(source, target, schemas, may, may_create, user, carry: Carry, problems: list[str]) -> None:
    carry.memberships = [Membership(p, s, t, tuple(c) if c else None, f) for p, s, t, c, f in source.execute(MEMBERSHIPS, [schemas])]
    carry.schema_memberships = [tuple(r) for r in source.execute(SCHEMA_MEMBERSHIPS, [schemas])]
    target_schema_memberships = [tuple(r) for r in target.execute(SCHEMA_MEMBERSHIPS, [schemas])]
    names = sorted({m.publication for m in carry.memberships} | {p for p, _ in carry.schema_memberships})
    dev_pubs = {r[0]: r for r in source.execute(PUBLICATIONS, [names])}
    there = {r[0]: r[1] for r in target.execute(PUBLICATIONS, [names])}
    owners = actable_roles(target, sorted(set(there.values()) | {r[1] for r in dev_pubs.values()}))
    for name in names:
        if name in there:
            if not owners.get(there[name]):
                problems.append(f"publication {name}: adding the cloned tables needs its owner's privileges ({user} is not a member of {there[name]})")
            continue
        _, owner, ins, upd, dele, trunc, via_root = dev_pubs[name]
        if not may_create:
            problems.append(f"publication {name} must be created on the target: {user} lacks CREATE on the database")
        elif not owners.get(owner):
            problems.append(f"publication {name} must be created owned by {owner}: {user} is not a member of {owner}")
        actions = ", ".join(a for a, on in (("insert", ins), ("update", upd), ("delete", dele), ("truncate", trunc)) if on)
        carry.create_publications.append({"name": name, "owner": owner, "publish": actions, "via_root": via_root})
    if (carry.schema_memberships or target_schema_memberships) and sorted(carry.schema_memberships) != sorted(target_schema_memberships) and not carry.superuser:
        problems.append("publication memberships FOR TABLES IN SCHEMA differ from the source's: changing them needs superuser")


def carry_pre(conn: psycopg.Connection, carry: Carry) -> list[str]:
    """Statements run before the dump (inside the clone's transaction)."""
    q = lambda c: c.as_string(conn)  # noqa: E731
    lines = []
    for name in carry.drop_event_triggers:
        lines.append(q(sql.SQL("DROP EVENT TRIGGER IF EXISTS {};").format(sql.Identifier(name))))
    for role, schema, objtype, grantee in carry.revoke_default_acls:
        lines.append(
            q(
                sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} REVOKE ALL ON {} FROM {};").format(
                    sql.Identifier(role), sql.Identifier(schema), sql.SQL(DEFAULT_ACL_TYPES[objtype]),
                    sql.SQL("PUBLIC") if grantee == "PUBLIC" else sql.Identifier(grantee),
                )
            )
        )
    for name in carry.missing_schemas:
        owner = next(s.owner for s in carry.schemas if s.name == name)
        lines.append(q(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {};").format(sql.Identifier(name), sql.Identifier(owner))))
    for state in carry.schemas:
        if not carry.manage_schema.get(state.name):
            continue
        ident = sql.Identifier(state.name)
        lines.append(q(sql.SQL("ALTER SCHEMA {} OWNER TO {};").format(ident, sql.Identifier(state.owner))))
        lines.append(q(sql.SQL("COMMENT ON SCHEMA {} IS {};").format(ident, sql.Literal(state.comment))))
    return lines


def carry_post(conn: psycopg.Connection, carry: Carry) -> list[str]:
    """Statements run after the dump: publications, event triggers."""
    q = lambda c: c.as_string(conn)  # noqa: E731
    lines = []
    for pub in carry.create_publications:
        lines.append(
            q(
                sql.SQL("CREATE PUBLICATION {} WITH (publish = {}, publish_via_partition_root = {});").format(
                    sql.Identifier(pub["name"]), sql.Literal(pub["publish"]), sql.Literal(pub["via_root"])
                )
            )
        )
        lines.append(q(sql.SQL("ALTER PUBLICATION {} OWNER TO {};").format(sql.Identifier(pub["name"]), sql.Identifier(pub["owner"]))))
    for m in carry.memberships:
        columns = sql.SQL(" ({})").format(sql.SQL(", ").join(map(sql.Identifier, m.columns))) if m.columns else sql.SQL("")
        where = sql.SQL(" WHERE ({})").format(sql.SQL(m.row_filter)) if m.row_filter else sql.SQL("")
        lines.append(
            q(sql.SQL("ALTER PUBLICATION {} ADD TABLE ONLY {}{}{};").format(sql.Identifier(m.publication), sql.Identifier(m.schema, m.table), columns, where))
        )
    for t in carry.event_triggers:
        when = sql.SQL(" WHEN TAG IN ({})").format(sql.SQL(", ").join(map(sql.Literal, t.tags))) if t.tags else sql.SQL("")
        function = sql.SQL(t.function)  # regprocedure text from the catalog, schema-qualified
        lines.append(q(sql.SQL("CREATE EVENT TRIGGER {} ON {}{} EXECUTE FUNCTION {};").format(sql.Identifier(t.name), sql.Identifier(t.event), when, function)))
        lines.append(q(sql.SQL("ALTER EVENT TRIGGER {} OWNER TO {};").format(sql.Identifier(t.name), sql.Identifier(t.owner))))
        state = {"D": "DISABLE", "R": "ENABLE REPLICA", "A": "ENABLE ALWAYS"}.get(t.enabled)
        if state:
            lines.append(q(sql.SQL("ALTER EVENT TRIGGER {} {};").format(sql.Identifier(t.name), sql.SQL(state))))
    return lines
