// The SQL that gives a scratch database the live one's properties, as data: list settings quoted
// name by name as pg_dump does, the ACL rebuilt from nothing, every name and value quoted.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  alterDatabaseSql,
  createDatabaseSql,
  fixedPropertyDifferences,
  setClause,
  splitList,
  type DatabaseProperties,
} from '../lib/dump/database-properties.ts';

const props: DatabaseProperties = {
  encoding: 'UTF8',
  collate: 'C',
  ctype: 'C.UTF-8',
  localeProvider: 'icu',
  iculocale: 'en-US',
  owner: 'game owner',
  connectionLimit: 42,
  comment: "Planetarion's data",
  acl: [
    { grantee: 'game owner', privilege: 'CONNECT', grantable: false },
    { grantee: null, privilege: 'TEMPORARY', grantable: false },
    { grantee: 'app', privilege: 'CONNECT', grantable: true },
  ],
  settings: [
    { role: null, setting: 'work_mem=12MB' },
    { role: 'app', setting: 'search_path="$user", public, "Game ""Data"""' },
  ],
};

test('splitList reads a list setting the way the server stores it', () => {
  assert.equal(splitList('"$user", public'), ['$user', 'public']);
  assert.equal(splitList('a,b ,  "c, d"'), ['a', 'b', 'c, d']);
  assert.equal(splitList('"Game ""Data"""'), ['Game "Data"']);
  assert.equal(splitList(''), []);
});

test('setClause: a literal for a plain setting, one literal per name for a list setting; a bad name is refused', () => {
  assert.is(setClause("application_name=it's"), "SET application_name TO 'it''s'");
  assert.is(setClause('search_path="$user", public'), "SET search_path TO '$user', 'public'");
  assert.is(setClause('app.mode=a=b'), "SET app.mode TO 'a=b'");
  assert.throws(() => setClause('x; DROP TABLE t=1'), /not a setting/);
});

test('createDatabaseSql: the fixed properties and the owner, quoted; without properties the server default', () => {
  assert.is(
    createDatabaseSql('db_restore_1', props),
    `CREATE DATABASE "db_restore_1" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C.UTF-8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US' OWNER "game owner";`,
  );
  assert.is(createDatabaseSql('d', undefined), 'CREATE DATABASE "d" TEMPLATE template0;');
});

test('alterDatabaseSql: limit, comment, the ACL from nothing, settings per role', () => {
  assert.equal(alterDatabaseSql('d', props).split('\n'), [
    'ALTER DATABASE "d" CONNECTION LIMIT 42;',
    `COMMENT ON DATABASE "d" IS 'Planetarion''s data';`,
    'REVOKE ALL ON DATABASE "d" FROM PUBLIC, "game owner";',
    'GRANT CONNECT ON DATABASE "d" TO "game owner";',
    'GRANT TEMPORARY ON DATABASE "d" TO PUBLIC;',
    'GRANT CONNECT ON DATABASE "d" TO "app" WITH GRANT OPTION;',
    `ALTER DATABASE "d" SET work_mem TO '12MB';`,
    `ALTER ROLE "app" IN DATABASE "d" SET search_path TO '$user', 'public', 'Game "Data"';`,
  ]);
  // Default privileges (a null ACL) are left as a new database has them.
  assert.not.match(alterDatabaseSql('d', { ...props, acl: null, comment: null }), /REVOKE|GRANT|IS '/);
});

test('fixedPropertyDifferences names what CREATE DATABASE fixed and differs', () => {
  assert.equal(fixedPropertyDifferences(props, { ...props, owner: 'x', collate: 'C.UTF-8' }), [
    'collate: C -> C.UTF-8',
  ]);
});

test.run();
