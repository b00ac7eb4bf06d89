"""A comparable description of every schema object, read from the catalogs.

``describe_schema(conn, schemas)`` returns ``{kind: {key: description}}``
where keys are fully qualified names (the session's ``search_path`` is
emptied so ``pg_get_*`` output is qualified the same way on both sides) and
descriptions are plain JSON values: two databases hold the same objects
exactly when their descriptions are equal. Extension members are described
by their extension (name + version), not one by one.

``NOT_COMPARED`` lists the object kinds this module does not describe, with
a query counting them, so a report can name them instead of silently
ignoring them.
"""

from __future__ import annotations

from typing import Any, Sequence

import psycopg

# Objects created by an extension are compared through the extension.
_NOT_EXT = "not exists (select 1 from pg_depend e where e.classid = {cls}::regclass and e.objid = {oid} and e.deptype = 'e')"

# ACLs: NULL means "the default for the owner"; explode both the same way.
_ACL = """coalesce((select jsonb_agg(x order by x) from (
    select coalesce(nullif(g.rolname, ''), 'PUBLIC') || ':' || a.privilege_type || case when a.is_grantable then '*' else '' end as x
    from aclexplode(coalesce({acl}, acldefault({type}, {owner}))) a
    left join pg_roles g on g.oid = a.grantee) s), '[]'::jsonb)"""


def _acl(acl: str, type_: str, owner: str) -> str:
    return _ACL.format(acl=acl, type=f"'{type_}'", owner=owner)


# An aggregate's body is its pg_aggregate row (its prosrc is a placeholder):
# functions and types by name, never by OID.
_AGGREGATE = """(select jsonb_build_object(
    'kind', a.aggkind, 'direct_args', a.aggnumdirectargs, 'sfunc', a.aggtransfn::regprocedure::text,
    'stype', format_type(a.aggtranstype, null), 'sspace', a.aggtransspace, 'initcond', a.agginitval,
    'finalfunc', a.aggfinalfn::regprocedure::text, 'finalfunc_extra', a.aggfinalextra, 'finalfunc_modify', a.aggfinalmodify,
    'combinefunc', a.aggcombinefn::regprocedure::text, 'serialfunc', a.aggserialfn::regprocedure::text,
    'deserialfunc', a.aggdeserialfn::regprocedure::text, 'msfunc', a.aggmtransfn::regprocedure::text,
    'minvfunc', a.aggminvtransfn::regprocedure::text, 'mstype', format_type(nullif(a.aggmtranstype, 0), null),
    'msspace', a.aggmtransspace, 'minitcond', a.aggminitval, 'mfinalfunc', a.aggmfinalfn::regprocedure::text,
    'mfinalfunc_extra', a.aggmfinalextra, 'mfinalfunc_modify', a.aggmfinalmodify,
    'sortop', nullif(a.aggsortop, 0)::regoperator::text)
    from pg_aggregate a where a.aggfnoid = p.oid)"""


QUERIES: dict[str, str] = {
    "schemas": f"""
        select n.nspname, jsonb_build_object('owner', pg_get_userbyid(n.nspowner),
               'grants', {_acl('n.nspacl', 'n', 'n.nspowner')})
        from pg_namespace n where n.nspname = any(%(schemas)s)""",
    "tables": f"""
        select c.oid::regclass::text, jsonb_build_object(
               'kind', c.relkind, 'owner', pg_get_userbyid(c.relowner), 'persistence', c.relpersistence,
               'rls_enabled', c.relrowsecurity, 'rls_forced', c.relforcerowsecurity,
               'replica_identity', c.relreplident, 'options', c.reloptions,
               'partition_of', (select i.inhparent::regclass::text from pg_inherits i where i.inhrelid = c.oid and c.relispartition),
               'partition_bound', pg_get_expr(c.relpartbound, c.oid),
               'partition_key', case when c.relkind = 'p' then pg_get_partkeydef(c.oid) end,
               'inherits', (select jsonb_agg(i.inhparent::regclass::text order by i.inhseqno) from pg_inherits i
                            where i.inhrelid = c.oid and not c.relispartition),
               'of_type', case when c.reloftype <> 0 then c.reloftype::regtype::text end,
               'access_method', (select m.amname from pg_am m where m.oid = c.relam),
               'grants', {_acl('c.relacl', 'r', 'c.relowner')})
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.relkind in ('r', 'p', 'f') and n.nspname = any(%(schemas)s)
          and {_NOT_EXT.format(cls="'pg_class'", oid='c.oid')}""",
    "columns": f"""
        select c.oid::regclass::text || '.' || quote_ident(a.attname), jsonb_build_object(
               'position', row_number() over (partition by c.oid order by a.attnum),
               'type', format_type(a.atttypid, a.atttypmod), 'not_null', a.attnotnull,
               'default', pg_get_expr(d.adbin, d.adrelid), 'identity', a.attidentity, 'generated', a.attgenerated,
               'collation', case when a.attcollation <> t.typcollation then a.attcollation::regcollation::text end,
               'storage', a.attstorage, 'compression', a.attcompression, 'stats_target', nullif(a.attstattarget, -1), 'options', a.attoptions,
               'grants', case when a.attacl is not null then {_acl('a.attacl', 'c', 'c.relowner')} end)
        from pg_attribute a
        join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
        join pg_type t on t.oid = a.atttypid
        left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
        where a.attnum > 0 and not a.attisdropped and c.relkind in ('r', 'p', 'f', 'v', 'm', 'c')
          and n.nspname = any(%(schemas)s)
          and {_NOT_EXT.format(cls="'pg_class'", oid='c.oid')}
          and not (c.relkind = 'c' and {_NOT_EXT.format(cls="'pg_type'", oid='c.reltype')} = false)""",
    "constraints": """
        select coalesce(k.conrelid::regclass::text, k.contypid::regtype::text) || '.' || quote_ident(k.conname),
               jsonb_build_object('type', k.contype, 'definition', pg_get_constraintdef(k.oid),
                                  'validated', k.convalidated, 'deferrable', k.condeferrable,
                                  'deferred', k.condeferred,
                                  -- NO INHERIT means something for CHECK (and NOT NULL) constraints only; on a
                                  -- partition's primary key it is an artifact of how it was attached
                                  'no_inherit', case when k.contype in ('c', 'n') then k.connoinherit end)
        from pg_constraint k join pg_namespace n on n.oid = k.connamespace
        where n.nspname = any(%(schemas)s) and (k.conrelid <> 0 or k.contypid <> 0)
          and (k.conparentid = 0 or k.contype <> 'f')""",
    "indexes": f"""
        select i.indexrelid::regclass::text, jsonb_build_object(
               'table', i.indrelid::regclass::text, 'definition', pg_get_indexdef(i.indexrelid),
               'valid', i.indisvalid, 'ready', i.indisready, 'clustered', i.indisclustered,
               'replica_identity', i.indisreplident, 'options', c.reloptions)
        from pg_index i join pg_class c on c.oid = i.indexrelid join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = any(%(schemas)s) and {_NOT_EXT.format(cls="'pg_class'", oid='i.indrelid')}""",
    "policies": """
        select quote_ident(p.polname) || ' on ' || p.polrelid::regclass::text, jsonb_build_object(
               'command', p.polcmd, 'permissive', p.polpermissive,
               'roles', (select jsonb_agg(case when r = 0 then 'PUBLIC' else pg_get_userbyid(r) end order by 1)
                         from unnest(p.polroles) r),
               'using', pg_get_expr(p.polqual, p.polrelid), 'with_check', pg_get_expr(p.polwithcheck, p.polrelid))
        from pg_policy p join pg_class c on c.oid = p.polrelid join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = any(%(schemas)s)""",
    "triggers": """
        select quote_ident(t.tgname) || ' on ' || t.tgrelid::regclass::text,
               jsonb_build_object('definition', pg_get_triggerdef(t.oid), 'enabled', t.tgenabled)
        from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
        where not t.tgisinternal and n.nspname = any(%(schemas)s)""",
    "rules": """
        select quote_ident(r.rulename) || ' on ' || r.ev_class::regclass::text,
               jsonb_build_object('definition', pg_get_ruledef(r.oid), 'enabled', r.ev_enabled)
        from pg_rewrite r join pg_class c on c.oid = r.ev_class join pg_namespace n on n.oid = c.relnamespace
        where r.rulename <> '_RETURN' and n.nspname = any(%(schemas)s)""",
    "functions": f"""
        select p.oid::regprocedure::text, jsonb_build_object(
               'kind', p.prokind, 'returns', pg_get_function_result(p.oid),
               'arguments', pg_get_function_arguments(p.oid),
               'language', (select lanname from pg_language l where l.oid = p.prolang),
               'body', coalesce(pg_get_function_sqlbody(p.oid), p.prosrc), 'volatility', p.provolatile,
               'strict', p.proisstrict, 'security_definer', p.prosecdef, 'leakproof', p.proleakproof,
               'parallel', p.proparallel, 'config', p.proconfig, 'cost', p.procost, 'rows', p.prorows,
               'aggregate', {_AGGREGATE},
               'owner', pg_get_userbyid(p.proowner), 'grants', {_acl('p.proacl', 'f', 'p.proowner')})
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where n.nspname = any(%(schemas)s) and {_NOT_EXT.format(cls="'pg_proc'", oid='p.oid')}""",
    "views": f"""
        select c.oid::regclass::text, jsonb_build_object(
               'kind', c.relkind, 'definition', pg_get_viewdef(c.oid), 'options', c.reloptions,
               'populated', case when c.relkind = 'm' then c.relispopulated end,
               'owner', pg_get_userbyid(c.relowner), 'grants', {_acl('c.relacl', 'r', 'c.relowner')})
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.relkind in ('v', 'm') and n.nspname = any(%(schemas)s)
          and {_NOT_EXT.format(cls="'pg_class'", oid='c.oid')}""",
    "types": f"""
        select t.oid::regtype::text, jsonb_build_object(
               'kind', t.typtype,
               'labels', case when t.typtype = 'e' then (select jsonb_agg(e.enumlabel order by e.enumsortorder)
                                                         from pg_enum e where e.enumtypid = t.oid) end,
               'base', case when t.typtype = 'd' then format_type(t.typbasetype, t.typtypmod) end,
               'collation', case when t.typtype = 'd' and t.typcollation <> 0 then t.typcollation::regcollation::text end,
               'not_null', t.typnotnull, 'default', t.typdefault,
               'range_of', (select r.rngsubtype::regtype::text from pg_range r where r.rngtypid = t.oid),
               'owner', pg_get_userbyid(t.typowner), 'grants', {_acl('t.typacl', 'T', 't.typowner')})
        from pg_type t join pg_namespace n on n.oid = t.typnamespace
        where n.nspname = any(%(schemas)s) and t.typtype in ('e', 'd', 'c', 'r', 'm')
          and (t.typtype <> 'c' or (select relkind from pg_class where oid = t.typrelid) = 'c')
          and {_NOT_EXT.format(cls="'pg_type'", oid='t.oid')}""",
    "sequences": f"""
        select c.oid::regclass::text, jsonb_build_object(
               'type', format_type(s.seqtypid, null), 'start', s.seqstart, 'increment', s.seqincrement,
               'min', s.seqmin, 'max', s.seqmax, 'cache', s.seqcache, 'cycle', s.seqcycle, 'persistence', c.relpersistence,
               'owned_by', (select d.refobjid::regclass::text || '.' || quote_ident(a.attname)
                            from pg_depend d join pg_attribute a on a.attrelid = d.refobjid and a.attnum = d.refobjsubid
                            where d.classid = 'pg_class'::regclass and d.objid = c.oid and d.deptype in ('a', 'i')
                              and d.refclassid = 'pg_class'::regclass limit 1),
               'owner', pg_get_userbyid(c.relowner), 'grants', {_acl('c.relacl', 's', 'c.relowner')})
        from pg_class c join pg_sequence s on s.seqrelid = c.oid join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = any(%(schemas)s) and {_NOT_EXT.format(cls="'pg_class'", oid='c.oid')}""",
    "statistics": """
        select quote_ident(n.nspname) || '.' || quote_ident(s.stxname), jsonb_build_object('definition', pg_get_statisticsobjdef(s.oid), 'stats_target', nullif(s.stxstattarget, -1))
        from pg_statistic_ext s join pg_namespace n on n.oid = s.stxnamespace
        where n.nspname = any(%(schemas)s)""",
    "extensions": """
        select e.extname, jsonb_build_object('version', e.extversion, 'schema', n.nspname,
               'owner', pg_get_userbyid(e.extowner), 'comment', obj_description(e.oid, 'pg_extension'))
        from pg_extension e join pg_namespace n on n.oid = e.extnamespace""",
    # Database-wide, like extensions: an event trigger reacts to DDL anywhere.
    "event triggers": """
        select quote_ident(t.evtname), jsonb_build_object(
               'event', t.evtevent, 'tags', t.evttags, 'function', t.evtfoid::regprocedure::text,
               'enabled', t.evtenabled, 'owner', pg_get_userbyid(t.evtowner), 'comment', obj_description(t.oid, 'pg_event_trigger'))
        from pg_event_trigger t""",
    "publications": """
        select quote_ident(p.pubname), jsonb_build_object(
               'owner', pg_get_userbyid(p.pubowner), 'all_tables', p.puballtables, 'insert', p.pubinsert,
               'update', p.pubupdate, 'delete', p.pubdelete, 'truncate', p.pubtruncate, 'via_root', p.pubviaroot,
               'comment', obj_description(p.oid, 'pg_publication'))
        from pg_publication p
        where p.puballtables
           or exists (select 1 from pg_publication_rel r join pg_class c on c.oid = r.prrelid
                      where r.prpubid = p.oid and c.relnamespace in (select oid from pg_namespace where nspname = any(%(schemas)s)))
           or exists (select 1 from pg_publication_namespace pn
                      where pn.pnpubid = p.oid and pn.pnnspid in (select oid from pg_namespace where nspname = any(%(schemas)s)))""",
    "publication tables": """
        select quote_ident(p.pubname) || ' ' || r.prrelid::regclass::text, jsonb_build_object(
               'row_filter', pg_get_expr(r.prqual, r.prrelid),
               'columns', (select jsonb_agg(a.attname order by a.attnum) from pg_attribute a
                           where a.attrelid = r.prrelid and a.attnum = any(r.prattrs)))
        from pg_publication_rel r join pg_publication p on p.oid = r.prpubid
        join pg_class c on c.oid = r.prrelid join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = any(%(schemas)s)""",
    "publication schemas": """
        select quote_ident(p.pubname) || ' ' || quote_ident(n.nspname), 'true'::jsonb
        from pg_publication_namespace pn join pg_publication p on p.oid = pn.pnpubid
        join pg_namespace n on n.oid = pn.pnnspid where n.nspname = any(%(schemas)s)""",
    "default_privileges": """
        select coalesce(n.nspname, '*') || ' ' || pg_get_userbyid(d.defaclrole) || ' ' || d.defaclobjtype::text,
               (select jsonb_agg(x order by x) from (
                    select coalesce(nullif(g.rolname, ''), 'PUBLIC') || ':' || a.privilege_type
                           || case when a.is_grantable then '*' else '' end as x
                    from aclexplode(d.defaclacl) a left join pg_roles g on g.oid = a.grantee) s)
        from pg_default_acl d left join pg_namespace n on n.oid = d.defaclnamespace
        where n.nspname = any(%(schemas)s) or d.defaclnamespace = 0""",
    # Comments on objects of the schemas; those on extensions, event
    # triggers and publications are part of those objects' descriptions.
    "comments": """
        select pg_describe_object(d.classoid, d.objoid, d.objsubid), to_jsonb(d.description)
        from pg_description d
        where d.classoid in ('pg_class'::regclass, 'pg_proc'::regclass, 'pg_type'::regclass, 'pg_constraint'::regclass,
                             'pg_trigger'::regclass, 'pg_policy'::regclass, 'pg_rewrite'::regclass, 'pg_namespace'::regclass,
                             'pg_statistic_ext'::regclass)
          and (case d.classoid
                 when 'pg_class'::regclass then (select relnamespace from pg_class where oid = d.objoid)
                 when 'pg_proc'::regclass then (select pronamespace from pg_proc where oid = d.objoid)
                 when 'pg_type'::regclass then (select typnamespace from pg_type where oid = d.objoid)
                 when 'pg_constraint'::regclass then (select connamespace from pg_constraint where oid = d.objoid)
                 when 'pg_trigger'::regclass then (select c.relnamespace from pg_trigger t join pg_class c on c.oid = t.tgrelid where t.oid = d.objoid)
                 when 'pg_policy'::regclass then (select c.relnamespace from pg_policy p join pg_class c on c.oid = p.polrelid where p.oid = d.objoid)
                 when 'pg_rewrite'::regclass then (select c.relnamespace from pg_rewrite r join pg_class c on c.oid = r.ev_class where r.oid = d.objoid)
                 when 'pg_statistic_ext'::regclass then (select stxnamespace from pg_statistic_ext where oid = d.objoid)
                 else d.objoid end) in (select oid from pg_namespace where nspname = any(%(schemas)s))
          and not exists (select 1 from pg_depend e where e.classid = d.classoid and e.objid = d.objoid and e.deptype = 'e')""",
}

# Kinds we do not describe, with how to count them (so a report can say
# "not compared: 3 publications" instead of ignoring them).
NOT_COMPARED: dict[str, str] = {
    "roles and memberships (cluster-wide)": "select count(*) from pg_roles where rolname !~ '^pg_'",
    "publications without tables in the schemas": """
        select count(*) from pg_publication p where not p.puballtables
           and not exists (select 1 from pg_publication_rel r join pg_class c on c.oid = r.prrelid
                           where r.prpubid = p.oid and c.relnamespace in (select oid from pg_namespace where nspname = any(%(schemas)s)))
           and not exists (select 1 from pg_publication_namespace pn
                           where pn.pnpubid = p.oid and pn.pnnspid in (select oid from pg_namespace where nspname = any(%(schemas)s)))""",
    "publication memberships of tables outside the schemas": """
        select count(*) from pg_publication_rel r join pg_class c on c.oid = r.prrelid
        join pg_namespace n on n.oid = c.relnamespace where n.nspname <> all(%(schemas)s)""",
    "casts (user-defined)": f"""
        select count(*) from pg_cast c where c.oid >= 16384 and {_NOT_EXT.format(cls="'pg_cast'", oid='c.oid')}""",
    "operators, operator classes and families": f"""
        select (select count(*) from pg_operator o join pg_namespace n on n.oid = o.oprnamespace
                where n.nspname = any(%(schemas)s) and {_NOT_EXT.format(cls="'pg_operator'", oid='o.oid')})
             + (select count(*) from pg_opclass o join pg_namespace n on n.oid = o.opcnamespace
                where n.nspname = any(%(schemas)s) and {_NOT_EXT.format(cls="'pg_opclass'", oid='o.oid')})""",
    "collations": "select count(*) from pg_collation c join pg_namespace n on n.oid = c.collnamespace where n.nspname = any(%(schemas)s)",
    "text search configurations and dictionaries": """
        select (select count(*) from pg_ts_config c join pg_namespace n on n.oid = c.cfgnamespace where n.nspname = any(%(schemas)s))
             + (select count(*) from pg_ts_dict c join pg_namespace n on n.oid = c.dictnamespace where n.nspname = any(%(schemas)s))""",
    "foreign servers and user mappings": "select count(*) from pg_foreign_server",
    "security labels": "select count(*) from pg_seclabel",
    "large objects": "select count(*) from pg_largeobject_metadata",
    "tablespaces (placement)": "select count(*) from pg_tablespace where spcname not in ('pg_default', 'pg_global')",
}

ObjectMap = dict[str, dict[str, Any]]


def _prepare(conn: psycopg.Connection) -> None:
    # Fully qualified names from every pg_get_* / regclass output, the same
    # on both sides whatever the roles' search_path (transaction-local).
    conn.execute("select set_config('search_path', '', true)")


def describe_schema(conn: psycopg.Connection, schemas: Sequence[str]) -> ObjectMap:
    """Every compared object of ``schemas`` (plus database-wide extensions)."""
    out: ObjectMap = {}
    with conn.transaction():  # a savepoint inside a caller's snapshot transaction
        _prepare(conn)
        for kind, query in QUERIES.items():
            rows = conn.execute(query, {"schemas": list(schemas)}).fetchall()
            out[kind] = {key: value for key, value in rows}
        out["sequence positions"] = sequence_positions(conn, list(out["sequences"]))
    return out


def sequence_positions(conn: psycopg.Connection, sequences: Sequence[str]) -> dict[str, Any]:
    """``last_value`` and ``is_called`` of each sequence. They live in the
    sequences themselves, not in a catalog: one UNION ALL reads them all in
    a single round trip."""
    from psycopg import sql

    positions: dict[str, Any] = {}
    names = list(sequences)
    for i in range(0, len(names), 500):
        chunk = names[i : i + 500]
        query = sql.SQL(" union all ").join(
            sql.SQL("select {}::text, last_value, is_called from {}").format(sql.Literal(n), sql.SQL(n)) for n in chunk
        )
        for name, last, called in conn.execute(query):
            positions[name] = {"last_value": last, "is_called": called}
    return positions


def count_not_compared(conn: psycopg.Connection, schemas: Sequence[str]) -> dict[str, int]:
    """How many objects of each kind this module does not compare."""
    return {kind: conn.execute(q, {"schemas": list(schemas)}).fetchone()[0] for kind, q in NOT_COMPARED.items()}
