/** One user-facing command: its name is also the name of its launcher on the NAS. */
export interface Command {
  name: string;
  /** One line for listings. */
  summary: string;
  /** Runs with the user's arguments; throws CliError (or anything) on failure. */
  run(argv: string[]): Promise<void>;
}
