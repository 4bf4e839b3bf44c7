// What a database has at database level, which pg_dump (without --create) leaves out of the
// dump: encoding, collation and ctype with their locale provider, owner, connection limit,
// comment, ACL and the `ALTER DATABASE ... SET` / `ALTER ROLE ... IN DATABASE ... SET`
// settings. The backup records them in its manifest; a restore creates its scratch database
// with them, so the database swapped in is the live one's in every respect, not only its data.
import { errorText } from '../errors.ts';
import { quoteIdent } from './fingerprint.ts';
import type { Logger } from '../log.ts';
import type { Shell } from '../host/shell.ts';
import type { Sql } from '../host/psql-session.ts';

export interface DatabaseProperties {
  encoding: string;
  collate: string;
  ctype: string;
  localeProvider: 'libc' | 'icu';
  /** The ICU locale when the provider is icu. */
  iculocale: string | null;
  owner: string;
  /** -1: no limit. */
  connectionLimit: number;
  comment: string | null;
  /** The ACL's entries (grantee null: PUBLIC); null when the database has the default privileges. */
  acl: Array<{ grantee: string | null; privilege: string; grantable: boolean }> | null;
  /** pg_db_role_setting's `name=value` entries for this database; role null: for every role. */
  settings: Array<{ role: string | null; setting: string }>;
}

const literal = (text: string) => `'${text.replace(/'/g, "''")}'`;

/** The query whose one line of output parseDatabaseProperties reads (none: no database of that name). */
export function databasePropertiesQuery(database: string): string {
  // to_jsonb(d) reads the locale columns by name: they were renamed between major versions.
  return `
    SELECT json_build_object(
      'encoding', pg_encoding_to_char(d.encoding), 'collate', d.datcollate, 'ctype', d.datctype,
      'localeProvider', CASE to_jsonb(d) ->> 'datlocprovider' WHEN 'i' THEN 'icu' ELSE 'libc' END,
      'iculocale', coalesce(to_jsonb(d) ->> 'daticulocale', to_jsonb(d) ->> 'datlocale'),
      'owner', pg_get_userbyid(d.datdba), 'connectionLimit', d.datconnlimit,
      'comment', shobj_description(d.oid, 'pg_database'),
      'acl', CASE WHEN d.datacl IS NULL THEN NULL ELSE (
        SELECT coalesce(json_agg(json_build_object('grantee', CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END,
          'privilege', a.privilege_type, 'grantable', a.is_grantable) ORDER BY a.grantee, a.privilege_type), '[]')
        FROM aclexplode(d.datacl) a) END,
      'settings', (
        SELECT coalesce(json_agg(json_build_object('role', CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END,
          'setting', c.setting) ORDER BY s.setrole, c.n), '[]')
        FROM pg_db_role_setting s, unnest(s.setconfig) WITH ORDINALITY AS c(setting, n) WHERE s.setdatabase = d.oid))
    FROM pg_database d WHERE d.datname = ${literal(database)};`;
}

/** The properties in the query's output (JSON strings escape newlines: it is one line). */
export function parseDatabaseProperties(out: string): DatabaseProperties | undefined {
  return out.trim() ? (JSON.parse(out) as DatabaseProperties) : undefined;
}

/** The properties of a database, or undefined when there is no database of that name. */
export async function readDatabaseProperties(sql: Sql, database: string): Promise<DatabaseProperties | undefined> {
  return parseDatabaseProperties(await sql(databasePropertiesQuery(database)));
}

/**
 * The backup's call: the properties of the database being backed up, read with one `docker exec
 * psql` in that database; a failure only warns (a restore then uses the live database's).
 */
export async function recordDatabaseProperties(
  $: Shell,
  target: { docker: string; container: string; user: string; database: string },
  log: Logger,
): Promise<DatabaseProperties | undefined> {
  const sql: Sql = async (text) => {
    const out = await $({
      input: text,
      nothrow: true,
      timeout: '60s',
    })`${target.docker} exec -i ${target.container} psql -X -q -A -t -v ON_ERROR_STOP=1 -U ${target.user} -d ${target.database}`;
    if (out.exitCode !== 0) throw new Error(out.stderr.trim() || `psql exit ${out.exitCode}`);
    return out.stdout.trim();
  };
  return await readDatabaseProperties(sql, target.database).catch((error: unknown) => {
    log.warn(
      `Could not read the database-level properties of '${target.database}' for the manifest: ${errorText(error)}`,
    );
    return undefined;
  });
}

/** CREATE DATABASE with the properties that cannot change afterwards (and the owner). */
export function createDatabaseSql(name: string, properties: DatabaseProperties | undefined): string {
  if (!properties) return `CREATE DATABASE ${quoteIdent(name)} TEMPLATE template0;`;
  const icu =
    properties.localeProvider === 'icu' && properties.iculocale ? ` ICU_LOCALE ${literal(properties.iculocale)}` : '';
  return (
    `CREATE DATABASE ${quoteIdent(name)} TEMPLATE template0 ENCODING ${literal(properties.encoding)} LC_COLLATE ${literal(properties.collate)}` +
    ` LC_CTYPE ${literal(properties.ctype)} LOCALE_PROVIDER ${properties.localeProvider}${icu} OWNER ${quoteIdent(properties.owner)};`
  );
}

/** The statements that give a database the rest: connection limit, comment, ACL, settings. */
export function alterDatabaseSql(name: string, properties: DatabaseProperties): string {
  const db = quoteIdent(name);
  const statements = [
    `ALTER DATABASE ${db} CONNECTION LIMIT ${Number(properties.connectionLimit)};`,
    `COMMENT ON DATABASE ${db} IS ${properties.comment === null ? 'NULL' : literal(properties.comment)};`,
  ];
  if (properties.acl) {
    // From no privileges at all to exactly the recorded ones (revokes of CONNECT included).
    statements.push(`REVOKE ALL ON DATABASE ${db} FROM PUBLIC, ${quoteIdent(properties.owner)};`);
    for (const entry of properties.acl) {
      const grantee = entry.grantee === null ? 'PUBLIC' : quoteIdent(entry.grantee);
      statements.push(
        `GRANT ${privilegeName(entry.privilege)} ON DATABASE ${db} TO ${grantee}${entry.grantable ? ' WITH GRANT OPTION' : ''};`,
      );
    }
  }
  for (const { role, setting } of properties.settings) {
    statements.push(
      `${role === null ? `ALTER DATABASE ${db}` : `ALTER ROLE ${quoteIdent(role)} IN DATABASE ${db}`} ${setClause(setting)};`,
    );
  }
  return statements.join('\n');
}

/** The properties fixed at CREATE DATABASE that differ between two databases, as `name: a -> b`. */
export function fixedPropertyDifferences(expected: DatabaseProperties, actual: DatabaseProperties): string[] {
  const keys = ['encoding', 'collate', 'ctype', 'localeProvider', 'iculocale'] as const;
  return keys
    .filter((k) => (expected[k] ?? null) !== (actual[k] ?? null))
    .map((k) => `${k}: ${expected[k]} -> ${actual[k]}`);
}

function privilegeName(privilege: string): string {
  if (!/^(CREATE|CONNECT|TEMPORARY|TEMP)$/.test(privilege))
    throw new Error(`unknown database privilege '${privilege}'`);
  return privilege;
}

/** Settings whose value is a list of names, each quoted on its own (as pg_dump writes them). */
const listSettings = new Set([
  'search_path',
  'temp_tablespaces',
  'session_preload_libraries',
  'local_preload_libraries',
  'shared_preload_libraries',
  'unix_socket_directories',
]);

/** `SET name TO value` for a pg_db_role_setting entry `name=value`. */
export function setClause(setting: string): string {
  const at = setting.indexOf('=');
  const name = setting.slice(0, at);
  const value = setting.slice(at + 1);
  if (at <= 0 || !/^[A-Za-z_][\w$]*(\.[A-Za-z_][\w$]*)*$/.test(name)) throw new Error(`not a setting: '${setting}'`);
  if (!listSettings.has(name.toLowerCase())) return `SET ${name} TO ${literal(value)}`;
  return `SET ${name} TO ${splitList(value).map(literal).join(', ')}`;
}

/** Splits a list setting's value (`"$user", public`) into its names, as the server's SplitGUCList does. */
export function splitList(value: string): string[] {
  const names: string[] = [];
  let i = 0;
  const skipSpace = () => {
    while (i < value.length && /\s/.test(value[i]!)) i++;
  };
  skipSpace();
  while (i < value.length) {
    let name = '';
    if (value[i] === '"') {
      for (i++; i < value.length; i++) {
        if (value[i] === '"' && value[i + 1] === '"') name += value[i++];
        else if (value[i] === '"') break;
        else name += value[i];
      }
      i++;
    } else {
      while (i < value.length && value[i] !== ',' && !/\s/.test(value[i]!)) name += value[i++];
    }
    names.push(name);
    skipSpace();
    if (value[i] === ',') i++;
    skipSpace();
  }
  return names;
}
