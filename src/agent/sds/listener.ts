// A gRPC server on a Unix socket that hands out private keys: the socket appears at its path
// only with its final mode (bound under a temporary name, chmod, renamed into place), a stale
// socket left by a dead process is replaced, a live one or a non-socket file is not, and
// closing removes the socket file.
import { randomUUID } from "node:crypto";
import { promises as fs } from "node:fs";
import net from "node:net";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import type { Log } from "../../log/logger.js";
import { closeWithGrace } from "../../timing/grace.js";

export interface UnixSocketOptions {
  socketPath: string;
  /** Mode of the socket file; must grant nothing to other users. */
  socketMode: number;
  /** Mode for the socket's directory when it has to be created. Existing directories are left as they are. */
  dirMode: number;
  log: Log;
  /** How long close() lets calls finish before forcing them. */
  graceMs?: number;
}

export interface UnixSocketListener {
  /** The gRPC target clients use, `unix:///abs/path/socket`. */
  readonly address: string;
  /** Absolute path of the socket file. */
  readonly socketPath: string;
  /** Shuts the server down (forcefully after the grace period) and removes the socket file. */
  close(): Promise<void>;
}

/** Binds `server` to a Unix socket at `opts.socketPath`. */
export async function listenOnUnixSocket(
  server: grpc.Server,
  opts: UnixSocketOptions,
): Promise<UnixSocketListener> {
  const socketPath = path.resolve(opts.socketPath);
  if ((opts.socketMode & 0o007) !== 0)
    throw new Error(
      `SDS socket mode ${opts.socketMode.toString(8)} grants access to other users; it serves private keys`,
    );
  await prepareSocketDir(socketPath, opts.dirMode, opts.log);

  const tmpPath = path.join(
    path.dirname(socketPath),
    `.${path.basename(socketPath)}.${process.pid}.${randomUUID().slice(0, 8)}`,
  );
  try {
    await new Promise<void>((resolve, reject) => {
      server.bindAsync(`unix://${tmpPath}`, grpc.ServerCredentials.createInsecure(), (err) =>
        err ? reject(err) : resolve(),
      );
    });
    await fs.chmod(tmpPath, opts.socketMode);
    await fs.rename(tmpPath, socketPath);
  } catch (err) {
    server.forceShutdown();
    await fs.rm(tmpPath, { force: true });
    throw new Error(`SDS: cannot listen on ${socketPath}: ${(err as Error).message}`, { cause: err });
  }

  const graceMs = opts.graceMs ?? 2000;
  let closed: Promise<void> | undefined;
  return {
    address: `unix://${socketPath}`,
    socketPath,
    close: () =>
      (closed ??= (async () => {
        await closeWithGrace({
          graceful: (done) => server.tryShutdown(() => done()),
          force: () => server.forceShutdown(),
          graceMs,
        });
        await removeIfSocket(socketPath);
      })()),
  };
}

async function prepareSocketDir(socketPath: string, dirMode: number, log: Log): Promise<void> {
  const dir = path.dirname(socketPath);
  let existed = true;
  try {
    await fs.lstat(dir);
  } catch (err) {
    if (!isErrno(err, "ENOENT")) throw err;
    existed = false;
  }
  if (!existed) {
    await fs.mkdir(dir, { recursive: true, mode: dirMode });
    await fs.chmod(dir, dirMode); // mkdir's mode is filtered by the umask
  }
  const st = await fs.stat(dir);
  if (!st.isDirectory()) throw new Error(`SDS: ${dir} is not a directory`);
  if ((st.mode & 0o002) !== 0 && (st.mode & 0o1000) === 0)
    log.warn({ dir, mode: (st.mode & 0o7777).toString(8) }, "SDS: socket directory is world-writable");

  let existing;
  try {
    existing = await fs.lstat(socketPath);
  } catch (err) {
    if (isErrno(err, "ENOENT")) return;
    throw err;
  }
  if (!existing.isSocket())
    throw new Error(`SDS: refusing to replace ${socketPath}: it exists and is not a socket`);
  if (await isListening(socketPath))
    throw new Error(`SDS: another process is already serving on ${socketPath}`);
  await fs.unlink(socketPath);
  log.info({ socket: socketPath }, "SDS: removed stale socket");
}

function isListening(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ path: socketPath });
    const done = (v: boolean): void => {
      sock.destroy();
      resolve(v);
    };
    sock.setTimeout(1000, () => done(false));
    sock.once("connect", () => done(true));
    sock.once("error", () => done(false));
  });
}

async function removeIfSocket(p: string): Promise<void> {
  try {
    if ((await fs.lstat(p)).isSocket()) await fs.unlink(p);
  } catch (err) {
    if (!isErrno(err, "ENOENT")) throw err;
  }
}

function isErrno(err: unknown, code: string): boolean {
  return typeof err === "object" && err !== null && (err as { code?: unknown }).code === code;
}
