import { defineCommand } from '../lib/cli/command.ts';

export const setupBackupCron = defineCommand(
  {
    name: 'setup-backup-cron',
    usage: '[options]',
    description: [
      'Installs two marked lines: backup-database on --schedule and the restore drill',
      '(restore-database --test latest) on --drill-schedule, both run by absolute path with their',
      'output appended to <logs>/backup.log. Settings that differ from what the executables would',
      'find by themselves (PLANETARION_DIR, the container, ...) are written into the lines as',
      'VAR=value, since cron runs with an almost empty environment. Re-running replaces the lines',
      '(never duplicates them); every other line of the crontab is kept byte for byte.',
      '',
      'On QNAP (/etc/config/crontab exists) it edits that file atomically, keeps the previous one as',
      'crontab.planetarion-backup.bak beside it, then runs `crontab /etc/config/crontab` and',
      '`/etc/init.d/crond.sh restart` (lines added with `crontab -` alone are lost at reboot).',
      "Elsewhere it edits the user's crontab with `crontab -l` / `crontab -`.",
      '',
      'It checks first (exit 2, nothing written): the crontab, the base dir, the executables,',
      "docker (cron's PATH lacks Container Station's folder), the schedules. After installing it reads",
      'the crontab back, runs backup-database --dry-run with the same environment cron will use, and',
      'prints the next three run times in local time.',
    ].join('\n'),
    flags: [
      {
        name: 'binary',
        type: 'string',
        valueName: 'PATH',
        description: 'the backup-database cron runs; restore-database must be beside it',
        defaultText: '<dir>/backup-database',
      },
      { name: 'no-drill', type: 'boolean', description: 'no restore-drill line (an installed one is removed)' },
      { name: 'uninstall', type: 'boolean', description: 'remove the managed lines, nothing else' },
      {
        name: 'status',
        type: 'boolean',
        description: "show the installed lines, their next runs, the last backup's and drill's result",
      },
      {
        name: 'root',
        type: 'string',
        valueName: 'DIR',
        defaultText: '/',
        description:
          "treat DIR as / for etc/config/crontab, etc/init.d/crond.sh and Container Station\n(PLANETARION_DIR, --binary and the crontab command on PATH are this machine's)",
      },
      {
        name: 'skip-test',
        type: 'boolean',
        description:
          "skip the backup-database --dry-run self test: when the database container is not up\nyet (first install before the stack starts), or the tree under --root is not this machine's",
      },
    ],
    settings: ['schedule', 'drillSchedule', 'dir', 'backupDir', 'logDir', 'container', 'dbUser', 'dbName', 'docker'],
    dryRun: true,
    maxPositionals: 0,
    examples: [
      'setup-backup-cron                                  # backups at 02:00, 10:00, 18:00; drill Sundays 04:00',
      "setup-backup-cron --schedule '30 */6 * * *' --dry-run   # show the crontab diff, change nothing",
      'setup-backup-cron --status',
      'setup-backup-cron --uninstall',
      'PLANETARION_DIR=/share/CACHEDEV2_DATA/planetarion setup-backup-cron --no-drill --json',
    ],
  },
  // Loaded only when the command runs: --help and --version answer without it (scripts/cli.ts).
  async (invocation) => (await import('../lib/commands/setup-backup-cron.ts')).setupBackupCronCommand(invocation),
);
