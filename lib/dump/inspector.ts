// Reads a plain-SQL dump as it streams past (gunzipping it when compressed) without keeping it:
// it proves the gzip stream is intact, finds pg_dump's completion trailer, and collects the
// sequence values the dump sets (pg_dump reads sequences outside the snapshot, so the values
// in the file are the ones the fingerprint must hold). Only statements count: a line of COPY
// data that reads like a setval() is a row of some table, never a sequence.
import { CliError } from '../errors.ts';
import type { SequenceState } from './fingerprint.ts';
import { GunzipScan } from './gunzip-scan.ts';

export interface DumpInspection {
  /** `-- PostgreSQL database dump complete` is present at the end. */
  complete: boolean;
  /** The `\restrict KEY` at the top has its `\unrestrict KEY` at the end (PostgreSQL 15.14+). */
  restrictMatched: boolean;
  /** The gzip stream decoded to its end without error (always true for plain files). */
  gzipIntact: boolean;
  gzipError: string | undefined;
  /** The plain SQL's size. */
  sqlBytes: number;
  /** Empty when the inspector was told not to collect them. */
  sequences: SequenceState[];
  /** From the dump's header comments: `-- Dumped from database version ...` / `-- Dumped by pg_dump version ...`. */
  serverVersion: string | undefined;
  pgDumpVersion: string | undefined;
}

const setvalPrefix = Buffer.from('SELECT pg_catalog.setval(');
const copyPrefix = Buffer.from('COPY ');
const copyStatementEnd = /FROM stdin;\r?$/;
/** COPY data ends with a line holding only `\.` (a row's backslash is always escaped as `\\`). */
const copyEnd = Buffer.from('\\.');
const newline = 0x0a;
const maxCarry = 1 << 20;
const keepHead = 4096;
const keepTail = 4096;

/** Parses `SELECT pg_catalog.setval('public.seq', 42, true);` into a SequenceState. */
export function parseSetval(line: string): SequenceState | undefined {
  const m = /^SELECT pg_catalog\.setval\('((?:[^']|'')*)', (-?\d+), (true|false)\);\s*$/.exec(line);
  return m ? { name: m[1]!.replace(/''/g, "'"), value: m[2]!, isCalled: m[3] === 'true' } : undefined;
}

/** Feed it the dump's bytes with write(), then end() for the findings. */
export class DumpInspector {
  private readonly gunzip: GunzipScan | undefined;
  private carry: Buffer = Buffer.alloc(0);
  private carryAtLineStart = true;
  private head: Buffer = Buffer.alloc(0);
  /** The last keepTail bytes of the SQL (tailLength of them so far), in one buffer that is reused. */
  private readonly tail: Buffer = Buffer.alloc(keepTail);
  private tailLength = 0;
  private sqlBytes = 0;
  private readonly sequences: SequenceState[] = [];
  /** Between a `COPY ... FROM stdin;` line and its `\.`: the lines are rows. */
  private inCopy = false;

  /**
   * @param options.sequences collect the setval() values (default): only a fingerprint needs
   *   them. Without, the lines are not read at all, only the head, the tail and the size: the
   *   scan was a sixth of the inspector's CPU on a pgbench dump, taken from pg_dump's cores.
   */
  constructor(
    compressed: boolean,
    private readonly options: { sequences?: boolean } = {},
  ) {
    // Inflated in place as the bytes arrive: the stream is only read, never kept.
    if (compressed) this.gunzip = new GunzipScan((sql) => this.scan(sql));
  }

  /** Takes the next chunk of the file: processed before it resolves, and none of it kept (the caller may reuse the buffer). */
  async write(chunk: Buffer): Promise<void> {
    if (this.gunzip) this.gunzip.write(chunk);
    else this.scan(chunk);
  }

  /** All bytes were written: the findings. */
  async end(): Promise<DumpInspection> {
    this.gunzip?.end();
    if (this.carry.length) this.scanLines(this.carry, this.carryAtLineStart);
    const tailText = this.tail.subarray(0, this.tailLength).toString('utf8');
    const headText = this.head.toString('utf8');
    const restrict = /^\\restrict (\S+)/m.exec(headText);
    const names = this.sequences.map((s) => s.name);
    const twice = [...new Set(names.filter((name, i) => names.indexOf(name) !== i))];
    // Two values for one sequence: which one the fingerprint should hold is unknowable.
    if (twice.length)
      throw new CliError(`the dump sets sequence ${twice.join(', ')} more than once: it is not a dump pg_dump wrote`);
    return {
      complete: /-- PostgreSQL database dump complete\n/.test(tailText),
      restrictMatched: restrict
        ? new RegExp(`^\\\\unrestrict ${restrict[1]!.replace(/[^\w]/g, '\\$&')}\\s*$`, 'm').test(tailText)
        : true,
      gzipIntact: this.gunzip?.error === undefined,
      gzipError: this.gunzip?.error,
      sqlBytes: this.sqlBytes,
      sequences: this.sequences,
      serverVersion: /^-- Dumped from database version (.+)$/m.exec(headText)?.[1],
      pgDumpVersion: /^-- Dumped by pg_dump version (.+)$/m.exec(headText)?.[1],
    };
  }

  // Copies only what must outlive the chunk (the head, the tail, a partial last line): a
  // copy of every chunk doubled the inspector's CPU time on a 280 MB dump.
  private scan(chunk: Buffer): void {
    this.sqlBytes += chunk.length;
    if (this.head.length < keepHead)
      this.head = Buffer.concat([this.head, chunk.subarray(0, keepHead - this.head.length)]);
    this.keepTail(chunk);
    if (this.options.sequences === false) return;

    const firstNewline = chunk.indexOf(newline);
    if (firstNewline < 0) {
      this.keepCarry(this.carry.length ? Buffer.concat([this.carry, chunk]) : chunk);
      return;
    }
    // The line the carry began ends in this chunk: scan it on its own (it is short).
    const firstLine = chunk.subarray(0, firstNewline + 1);
    this.scanLines(this.carry.length ? Buffer.concat([this.carry, firstLine]) : firstLine, this.carryAtLineStart);
    const lastNewline = chunk.lastIndexOf(newline);
    if (lastNewline > firstNewline) this.scanLines(chunk.subarray(firstNewline + 1, lastNewline + 1), true);
    this.carryAtLineStart = true;
    this.keepCarry(chunk.subarray(lastNewline + 1));
  }

  /**
   * Copies the chunk's end into the tail buffer: a fresh copy per chunk (thousands in a large
   * dump) was garbage outside V8's heap that no collection was in a hurry to free.
   */
  private keepTail(chunk: Buffer): void {
    if (chunk.length >= keepTail) {
      chunk.copy(this.tail, 0, chunk.length - keepTail);
      this.tailLength = keepTail;
      return;
    }
    const kept = Math.min(this.tailLength, keepTail - chunk.length);
    this.tail.copyWithin(0, this.tailLength - kept, this.tailLength);
    chunk.copy(this.tail, kept);
    this.tailLength = kept + chunk.length;
  }

  /** A carried partial line longer than any setval line is cut: only its end matters then. */
  private keepCarry(rest: Buffer): void {
    if (rest.length > maxCarry) {
      this.carry = Buffer.from(rest.subarray(rest.length - 64));
      this.carryAtLineStart = false;
    } else {
      this.carry = Buffer.from(rest);
    }
  }

  /** Scans complete lines: statements for setval() and COPY, COPY data only for its end. */
  private scanLines(lines: Buffer, startsAtLineStart: boolean): void {
    let from = 0;
    while (from < lines.length) {
      if (this.inCopy) {
        const end = this.lineStarting(lines, copyEnd, from, startsAtLineStart, true);
        if (end < 0) return;
        this.inCopy = false;
        from = end + copyEnd.length;
        continue;
      }
      const setval = this.lineStarting(lines, setvalPrefix, from, startsAtLineStart);
      const copy = this.lineStarting(lines, copyPrefix, from, startsAtLineStart);
      const at = setval < 0 ? copy : copy < 0 ? setval : Math.min(setval, copy);
      if (at < 0) return;
      let end = lines.indexOf(newline, at);
      if (end < 0) end = lines.length;
      const line = lines.subarray(at, end).toString('utf8');
      if (at === copy) this.inCopy = copyStatementEnd.test(line);
      else {
        const parsed = parseSetval(line);
        if (parsed) this.sequences.push(parsed);
      }
      from = end;
    }
  }

  /** Where the next line that starts with `prefix` begins (-1: none); `whole`: the line is exactly `prefix`. */
  private lineStarting(lines: Buffer, prefix: Buffer, from: number, startsAtLineStart: boolean, whole = false): number {
    for (let at = lines.indexOf(prefix, from); at >= 0; at = lines.indexOf(prefix, at + 1)) {
      const atLineStart = at === 0 ? startsAtLineStart : lines[at - 1] === newline;
      const next = lines[at + prefix.length];
      if (atLineStart && (!whole || next === undefined || next === newline || next === 0x0d)) return at;
    }
    return -1;
  }
}
