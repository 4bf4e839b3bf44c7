// `npm test`: the test bed (test/env/setup.sh: idempotent, a no-op when the machine is ready),
// the type check, the build the end-to-end suites run, then every uvu suite (unit and integration
// against the real test bed). uvu prints Total/Passed only, so the last line is
// `N passed, N failed`, which CI reads. `npm test -- PATTERN` runs matching suites.
import { spawn } from 'node:child_process';

// A pattern picks among the test suites only (test/env holds scripts whose names match too).
const pattern = process.argv[2] ? `^(?=.*(?:${process.argv[2]})).*\\.test\\.ts$` : '\\.test\\.ts$';
let passed = 0;
let failed = 0;

/**
 * When each test file's header line (uvu prints its name alone on a line as it starts it) came:
 * a CI run near its time limit shows which suites to look at.
 */
function suiteClock() {
  const starts = [];
  let partial = '';
  return {
    feed(text) {
      const lines = (partial + text).split('\n');
      partial = lines.pop();
      for (const line of lines) if (/^[\w.-]+\.test\.ts$/.test(line)) starts.push([line, Date.now()]);
    },
    /** The slowest files, each until the next one started (the last until `end`). */
    slowest(end, count = 10) {
      return starts
        .map(([file, at], i) => [file, ((starts[i + 1]?.[1] ?? end) - at) / 1000])
        .sort((a, b) => b[1] - a[1])
        .slice(0, count);
    },
  };
}

/** Runs a command with its output shown and kept; resolves with exit code and output. */
function run(command, args, env = {}, onStdout = () => {}) {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let output = '';
    child.stdout.on('data', (d) => {
      output += d;
      onStdout(String(d));
      process.stdout.write(d);
    });
    child.stderr.on('data', (d) => {
      output += d;
      process.stderr.write(d);
    });
    child.on('close', (code, signal) => resolve({ code: code ?? 128, signal, output }));
  });
}

async function step(name, command, args) {
  console.log(`\n== ${name}`);
  const { code } = await run(command, args);
  if (code === 0) passed++;
  else {
    failed++;
    console.log(`== ${name} FAILED (exit ${code})`);
  }
  return code === 0;
}

const ready = await step('test bed', 'bash', ['test/env/setup.sh']);
await step('type check', 'npx', ['tsc', '--noEmit']);
await step('lint', 'npx', ['biome', 'check', '.']);
const built = ready && (await step('build', 'node', ['build.mjs']));
if (built) {
  console.log('\n== test suites');
  const clock = suiteClock();
  // --no-color: uvu sets FORCE_COLOR for children otherwise, and tests read their output.
  const { code, output } = await run(
    'node',
    ['--import', 'tsx', 'node_modules/uvu/bin.js', 'test', pattern, '--no-color'],
    { FORCE_COLOR: '0' },
    clock.feed,
  );
  console.log('\nslowest test files:');
  for (const [file, seconds] of clock.slowest(Date.now()))
    console.log(`  ${seconds.toFixed(0).padStart(5)} s  ${file}`);
  const total = Number(/Total:\s+(\d+)/.exec(output)?.[1] ?? 0);
  const ok = Number(/Passed:\s+(\d+)/.exec(output)?.[1] ?? 0);
  // uvu's Total leaves out skipped tests already (test.skip only counts them), so a skip must
  // not be subtracted again: that printed "-1 failed" and failed CI with every test passing.
  passed += ok;
  failed += total - ok;
  // A crash outside any test (a suite's hook, an import) shows no count of its own.
  if (code !== 0 && total - ok === 0) failed++;
  if (total === 0) {
    console.log('no test ran');
    failed++;
  }
}
console.log(`\n${passed} passed, ${failed} failed`);
process.exitCode = failed === 0 ? 0 : 1;
