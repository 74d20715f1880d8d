/**
 * Work that must run before a stop signal (SIGINT, SIGTERM, SIGHUP) ends the process: removing a
 * temp file the user never asked for, unmounting a union this process mounted for itself (a
 * `unionctl changes` stopped by Ctrl-C must not leave its mount behind).
 *
 * The rule: once a task has been registered, this module listens for the stop signals for the rest
 * of the process's life. At the first one, if nobody else listens for it, it runs the tasks
 * registered then (async ones awaited, for at most STOP_TASK_TIMEOUT_MS), stops listening and raises
 * the signal again, so the process ends the way it would have without us (killed by that signal:
 * exit status 128 + n). It keeps listening after the last task is gone because Node drops a signal
 * that came while a listener was registered if the listener is removed before the event loop got
 * to it (a Ctrl-C during a synchronous walk): the process must still end by it. A process that
 * handles the signal itself (`unionctl serve`, which shuts down gracefully and keeps its mounts)
 * owns its shutdown: the tasks do not run then. A second signal while the tasks run is ignored.
 *
 * While the tasks run, the interrupted command goes on and may fail because of them (a walk whose
 * mount went away): stopRequested() tells the CLI not to report such an error.
 */

const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
/** How long an async task may take before the signal is raised anyway (an unmount of a busy FUSE mount retries). */
const STOP_TASK_TIMEOUT_MS = 10_000;

export type StopTask = () => void | Promise<void>;

const tasks = new Set<StopTask>();
let listening = false;
let stopping: NodeJS.Signals | undefined;

/** Runs `task` before a stop signal ends the process, until the returned function is called. */
export function beforeStopSignal(task: StopTask): () => void {
  if (!listening) listen();
  tasks.add(task);
  return () => void tasks.delete(task);
}

/** The stop signal being handled, while the tasks run (the process is about to end by it). */
export function stopRequested(): NodeJS.Signals | undefined {
  return stopping;
}

function listen(): void {
  listening = true;
  // First in line: a handler that removes itself when called (serve's) must still be counted.
  for (const s of STOP_SIGNALS) process.prependListener(s, onStopSignal);
}

function unlisten(): void {
  for (const s of STOP_SIGNALS) process.off(s, onStopSignal);
}

function onStopSignal(signal: NodeJS.Signals): void {
  if (stopping !== undefined) return;
  if (process.listenerCount(signal) > 1) return; // someone else handles it (serve): their shutdown
  stopping = signal;
  void runTasks().finally(() => {
    unlisten();
    process.kill(process.pid, signal);
  });
}

async function runTasks(): Promise<void> {
  const running = [...tasks].map(async (task) => {
    try {
      await task();
    } catch {
      // The process is ending: a task that fails must not keep the others (or the signal) back.
    }
  });
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, STOP_TASK_TIMEOUT_MS)));
  await Promise.race([Promise.all(running), timeout]);
  clearTimeout(timer);
}
