// psql and pg_restore quote the row a load failed on: `CONTEXT:  COPY players, line 3: "..."`,
// `DETAIL:  Key (email)=(...) already exists.`, `invalid input syntax for type integer: "..."`.
// Where backups are encrypted that is data the operator chose to keep off the NAS in clear, so
// it is cut from what reaches the log and the diagnostics file; which table and line remain.

const redacted = '[redacted: row data]';

/** The text with every piece of row data psql's error messages quote replaced by a marker. */
export function redactRowData(text: string): string {
  return text
    .split('\n')
    .map((line) =>
      line
        // DETAIL lines name key values and failing rows.
        .replace(/(DETAIL:\s*).*/, `$1${redacted}`)
        // `COPY t, line 3: "row"` and `COPY t, line 3, column c: "value"`: keep table and line.
        .replace(/(COPY [^,\n]+, line \d+)[,:].*/, `$1 ${redacted}`)
        // psql echoes the failing statement's text for errors outside COPY.
        .replace(/^(\s*LINE \d+:).*/, `$1 ${redacted}`)
        // A message that ends by quoting a value (`... for type integer: "abc"`).
        .replace(/(ERROR:.*?: )"(?:[^"]|"")*"\s*$/, `$1"${redacted}"`),
    )
    .join('\n');
}
