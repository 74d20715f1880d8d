/**
 * Running the compiled CLI (node <outDir>/src/cli/main.js) from a test, the same way everywhere:
 * colour is left to the CLI's own detection (stdout and stderr are pipes), so FORCE_COLOR, which
 * node's test runner may set, NO_COLOR and UNIONCTL_DEBUG are removed unless the test sets them.
 */
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const CLI_MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], opts: { input?: Buffer; env?: Record<string, string | undefined> } = {}): CliResult {
  const env: Record<string, string | undefined> = {
    ...process.env,
    FORCE_COLOR: undefined,
    NO_COLOR: undefined,
    UNIONCTL_DEBUG: undefined,
    COLUMNS: undefined, // tables are read whole: not cut to a width
    ...opts.env,
  };
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
  const r = spawnSync(process.execPath, [CLI_MAIN, ...args], {
    input: opts.input,
    env: env as NodeJS.ProcessEnv,
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A result as a failed assertion shows it. */
export function showResult(r: CliResult): string {
  return `exit ${r.status}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
}

export interface AsyncCliResult extends CliResult {
  signal: NodeJS.Signals | null;
}

/**
 * runCli as its own process without blocking the test, so a test can run several at once or feed
 * one a stream. `input`: bytes for stdin, or a file descriptor to give the child as its stdin.
 */
export function runCliAsync(args: string[], input?: Buffer | number, opts: { timeoutMs?: number } = {}): Promise<AsyncCliResult> {
  return new Promise((resolve, reject) => {
    const stdin = typeof input === 'number' ? input : 'pipe';
    const env: Record<string, string | undefined> = {
      ...process.env,
      FORCE_COLOR: undefined,
      NO_COLOR: undefined,
      UNIONCTL_DEBUG: undefined,
      COLUMNS: undefined, // tables are read whole: not cut to a width
    };
    for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
    const child = spawn(process.execPath, [CLI_MAIN, ...args], {
      stdio: [stdin, 'pipe', 'pipe'],
      env: env as NodeJS.ProcessEnv,
      timeout: opts.timeoutMs,
    });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (status, signal) => resolve({ status, signal, stdout, stderr }));
    if (child.stdin !== null) {
      child.stdin.on('error', () => {}); // a refusal may come before all of stdin is read
      child.stdin.end(Buffer.isBuffer(input) ? input : undefined);
    }
  });
}
