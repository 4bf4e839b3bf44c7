// What psql and pg_restore print when a load fails, with the row data cut and the rest kept.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { redactRowData } from '../lib/dump/row-data-redaction.ts';

const cases: Array<[string, string]> = [
  [
    'psql:<stdin>:88: ERROR:  invalid input syntax for type bigint: "mail@example.org"',
    'psql:<stdin>:88: ERROR:  invalid input syntax for type bigint: "[redacted: row data]"',
  ],
  ['CONTEXT:  COPY users, line 3, column id: "mail@example.org"', 'CONTEXT:  COPY users, line 3 [redacted: row data]'],
  ['CONTEXT:  COPY users, line 3: "1\tmail@example.org\t..."', 'CONTEXT:  COPY users, line 3 [redacted: row data]'],
  ['DETAIL:  Key (email)=(mail@example.org) is duplicated.', 'DETAIL:  [redacted: row data]'],
  [
    'pg_restore: error: COPY failed for table "users": ERROR:  duplicate key value violates unique constraint "users_email_key"',
    'pg_restore: error: COPY failed for table "users": ERROR:  duplicate key value violates unique constraint "users_email_key"',
  ],
  ["LINE 1: INSERT INTO users VALUES (1, 'mail@example.org');", 'LINE 1: [redacted: row data]'],
  [
    'psql:<stdin>:12: ERROR:  role "ghost_owner" does not exist',
    'psql:<stdin>:12: ERROR:  role "ghost_owner" does not exist',
  ],
];

for (const [input, expected] of cases) {
  test(`redacts: ${input.slice(0, 60)}`, () => assert.is(redactRowData(input), expected));
}

test.run();
