/**
 * A small CRI client: the tests play kubelet against containerd's CRI plugin (there is no crictl
 * package here). It speaks runtime.v1's RuntimeService and ImageService (test/helpers/cri/
 * runtime.proto) on containerd's own socket and offers the steps a kubelet takes for a pod with one
 * container: pull, run a host-network sandbox, create and start a container, wait for it to exit,
 * and tear it all down again.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { loadProto, unaryCall } from './grpc.js';

const PROTO_DIR = fileURLToPath(new URL('../../../test/helpers/cri', import.meta.url));

export interface PodSandboxConfig {
  metadata: { name: string; uid: string; namespace: string; attempt: number };
  log_directory: string;
  linux: { security_context: { namespace_options: { network: 'NODE' | 'POD'; pid: 'POD' | 'CONTAINER' | 'NODE'; ipc: 'POD' | 'NODE' } } };
}

export interface ContainerStatus {
  id: string;
  state: 'CONTAINER_CREATED' | 'CONTAINER_RUNNING' | 'CONTAINER_EXITED' | 'CONTAINER_UNKNOWN';
  exit_code: number;
  image_ref: string;
  reason: string;
  message: string;
  log_path: string;
}

export interface CriClient {
  version(): Promise<{ runtime_name: string; runtime_version: string; runtime_api_version: string }>;
  /** PullImage; resolves with the image ref (id) containerd gives it. */
  pullImage(image: string, sandbox?: PodSandboxConfig): Promise<string>;
  removeImage(image: string): Promise<void>;
  /**
   * A sandbox on the host's network (no CNI needed) whose logs go to `logDirectory`. Its config sets
   * no hostname: runc cannot set one without a private UTS namespace.
   */
  hostNetworkSandboxConfig(name: string, logDirectory: string): PodSandboxConfig;
  runPodSandbox(config: PodSandboxConfig): Promise<string>;
  /** Creates container `name` running `command` from `image` in the sandbox; its log goes to <log_directory>/<name>.log. */
  createContainer(sandboxId: string, sandbox: PodSandboxConfig, name: string, image: string, command: string[]): Promise<string>;
  startContainer(id: string): Promise<void>;
  containerStatus(id: string): Promise<ContainerStatus>;
  /** Polls ContainerStatus until the container has exited (bounded by `timeoutMs`, default 60 s). */
  waitExited(id: string, timeoutMs?: number): Promise<ContainerStatus>;
  /** StopContainer + RemoveContainer, then StopPodSandbox + RemovePodSandbox (each idempotent in CRI). */
  removePod(sandboxId: string, containerIds: string[]): Promise<void>;
  close(): void;
}

export function criClient(containerdSocket: string): CriClient {
  const pkg = loadProto('runtime.proto', PROTO_DIR) as unknown as {
    runtime: { v1: { RuntimeService: grpc.ServiceClientConstructor; ImageService: grpc.ServiceClientConstructor } };
  };
  const address = `unix:${containerdSocket}`;
  const runtime = new pkg.runtime.v1.RuntimeService(address, grpc.credentials.createInsecure());
  const images = new pkg.runtime.v1.ImageService(address, grpc.credentials.createInsecure());
  const status = async (id: string) =>
    (await unaryCall<{ status: ContainerStatus }>(runtime, 'ContainerStatus', { container_id: id })).status;

  return {
    version: () => unaryCall(runtime, 'Version', { version: 'v1' }),
    async pullImage(image, sandbox) {
      const res = await unaryCall<{ image_ref: string }>(images, 'PullImage', { image: { image }, sandbox_config: sandbox });
      return res.image_ref;
    },
    async removeImage(image) {
      await unaryCall(images, 'RemoveImage', { image: { image } });
    },
    hostNetworkSandboxConfig: (name, logDirectory) => ({
      metadata: { name, uid: `${name}-uid`, namespace: 'unionctl-test', attempt: 0 },
      log_directory: logDirectory,
      linux: { security_context: { namespace_options: { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' } } },
    }),
    async runPodSandbox(config) {
      return (await unaryCall<{ pod_sandbox_id: string }>(runtime, 'RunPodSandbox', { config })).pod_sandbox_id;
    },
    async createContainer(sandboxId, sandbox, name, image, command) {
      const config = { metadata: { name, attempt: 0 }, image: { image }, command, log_path: `${name}.log` };
      const res = await unaryCall<{ container_id: string }>(runtime, 'CreateContainer', {
        pod_sandbox_id: sandboxId,
        config,
        sandbox_config: sandbox,
      });
      return res.container_id;
    },
    async startContainer(id) {
      await unaryCall(runtime, 'StartContainer', { container_id: id });
    },
    containerStatus: status,
    async waitExited(id, timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const now = await status(id);
        if (now.state === 'CONTAINER_EXITED') return now;
        if (Date.now() > deadline) throw new Error(`container ${id} has not exited after ${timeoutMs} ms: ${JSON.stringify(now)}`);
        await sleep(100);
      }
    },
    async removePod(sandboxId, containerIds) {
      for (const id of containerIds) {
        await unaryCall(runtime, 'StopContainer', { container_id: id, timeout: 0 });
        await unaryCall(runtime, 'RemoveContainer', { container_id: id });
      }
      await unaryCall(runtime, 'StopPodSandbox', { pod_sandbox_id: sandboxId });
      await unaryCall(runtime, 'RemovePodSandbox', { pod_sandbox_id: sandboxId });
    },
    close() {
      runtime.close();
      images.close();
    },
  };
}
