/**
 * Runs the compiled CLI (node <outDir>/src/cli/main.js) as its own process, asynchronously, so a
 * test can run several at once or feed one a stream: `await runCli(['--root', r, 'ls'], input)`.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const CLI_MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

export interface CliResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** `input`: bytes for stdin, or a file descriptor to give the child as its stdin. */
export function runCli(args: string[], input?: Buffer | number, opts: { timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const stdin = typeof input === 'number' ? input : 'pipe';
    const child = spawn(process.execPath, [CLI_MAIN, ...args], {
      stdio: [stdin, 'pipe', 'pipe'],
      env: { ...process.env, UNIONCTL_DEBUG: undefined, FORCE_COLOR: undefined },
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
