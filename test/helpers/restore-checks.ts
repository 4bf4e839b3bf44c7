// What the restore tests look at in a container: its databases, a marker row that tells which
// backup is live, its fingerprint; and real backups made with the built executable.
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import * as assert from 'uvu/assert';
import { takeFingerprint } from '../../lib/dump/fingerprint.ts';
import { PsqlSession } from '../../lib/host/psql-session.ts';
import { runTool } from './cli.ts';
import { psql } from './db.ts';

/** The database names in a container, sorted. */
export async function databases(container: string): Promise<string[]> {
  return (await psql(container, 'SELECT datname FROM pg_database ORDER BY 1', { db: 'postgres' })).split('\n');
}

/** The newest marker row's text ('none' without one): which backup the live database holds. */
export function marker(container: string): Promise<string> {
  return psql(
    container,
    "SELECT coalesce((SELECT body FROM chat_messages WHERE channel = '#marker' ORDER BY id DESC LIMIT 1), 'none')",
  );
}

/** Writes a marker row. */
export function setMarker(container: string, text: string): Promise<string> {
  return psql(
    container,
    `INSERT INTO chat_messages (channel, body, sent_at) VALUES ('#marker', '${text.replace(/'/g, "''")}', now())`,
  );
}

/** The fingerprint of a database, as the restore engine computes it. */
export async function fingerprintOf(container: string, database = 'planetarion'): Promise<string> {
  const session = PsqlSession.open({ docker: 'docker', container, user: 'planetarion_user', database });
  try {
    return (await takeFingerprint(session)).sha256;
  } finally {
    await session.close();
  }
}

/** A real backup of `container` into dir (keep 10); returns its file name, a second later so names differ. */
export async function backupInto(dir: string, container: string, extra: Record<string, string> = {}): Promise<string> {
  const r = await runTool('backup-database', ['--json', '--keep', '10'], {
    PLANETARION_DIR: dir,
    PLANETARION_DB_CONTAINER: container,
    ...extra,
  });
  assert.is(r.code, 0, r.stderr);
  await new Promise((resolve) => setTimeout(resolve, 1100)); // distinct timestamps in the names
  return JSON.parse(r.stdout).file as string;
}

/** Replaces a backup's bytes and rewrites its .sha256 and manifest to match (manifest fields patched too): only what reads the content can tell. */
export function resealBackup(path: string, bytes: Buffer, patch: Record<string, unknown> = {}): void {
  writeFileSync(path, bytes);
  const sha = createHash('sha256').update(bytes).digest('hex');
  writeFileSync(`${path}.sha256`, `${sha}  ${basename(path)}\n`);
  const manifest = JSON.parse(readFileSync(`${path}.json`, 'utf8'));
  writeFileSync(`${path}.json`, JSON.stringify({ ...manifest, sha256: sha, size: bytes.length, ...patch }));
}

/** Whether a database accepts connections: datallowconn and a real connection to it. */
export async function acceptsConnections(container: string, database = 'planetarion'): Promise<boolean> {
  const allowed = await psql(
    container,
    `SELECT datallowconn FROM pg_database WHERE datname = '${database.replace(/'/g, "''")}'`,
    { db: 'postgres' },
  );
  return allowed === 't' && (await psql(container, 'SELECT 1', { db: database }).catch(() => '')) === '1';
}
