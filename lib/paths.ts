// The names of the files the tools read and write, each defined once: the operators know them from
// the old scripts and the docs, and every command must agree on them.

/** The settings file in the base dir (KEY=VALUE lines). */
export const configFileName = 'planetarion.env';
/** The log of backups, restores and drills in the log dir (cron appends its output there too). */
export const backupLogName = 'backup.log';
/** The log of deployments in the log dir. */
export const deployLogName = 'deploy.log';
/** What the last runs did, in the base dir. */
export const statusFileName = 'status.json';
/** The game's compose file in the base dir on the NAS. */
export const nasComposeFileName = 'docker-compose.qnap.yml';
/** deploy-to-qnap's settings on the workstation, in the current folder. */
export const deployConfigFileName = '.qnap-deploy.env';

/** The commands that get a launcher of their own on the NAS (scripts/cli.ts dispatches on these names). */
export const launcherNames = ['backup-database', 'restore-database', 'setup-backup-cron', 'deploy-to-qnap'] as const;
