// `meshvault root rotate` and `meshvault root status` run (declared in commands/root.ts): the
// staged root rotation.
import { readFileSync } from "node:fs";
import { loadServerConfig } from "../config/load.js";
import type { ServerConfig } from "../config/schema.js";
import { parseDuration } from "../config/duration.js";
import { adminConnection } from "../vault/setup/index.js";
import { connectVault, VaultClient } from "../vault/index.js";
import { vaultConnectionFromConfig } from "../config/vault-schema.js";
import { parseSourceSpec, SourceSpecError } from "../verify/sources.js";
import { RotationOperator, describeStep, waitsFor, type Observation } from "../rotation/operator.js";
import { rotationStateRef, rotationStore, stateKubeConfig } from "../rotation/server-hook.js";
import { PHASES, enteredAt, phaseIndex, type Phase } from "../rotation/state.js";
import { CloserStack } from "../lifecycle/closer-stack.js";
import type { RootFlags, RotateFlags } from "./commands/root.js";

function usage(msg: string): never {
  process.stderr.write(`meshvault root: ${msg}\n`);
  process.exit(2);
}

function readBundle(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    return usage(
      `--import-root ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): give a PEM file with the root certificate and its private key`,
    );
  }
}

function setup(f: RootFlags & Partial<RotateFlags>): Promise<{
  op: RotationOperator;
  close: () => Promise<void>;
  config: ServerConfig;
}> {
  // The Vault clients opened on first use; close() rejects with a closer's error (the
  // command then fails with it), and a failed setup closes what it had opened.
  const closers = new CloserStack();
  return closers.unlessStartFails(async () => ({
    ...setupOperator(f, closers),
    close: () => closers.closeOrThrow(),
  }));
}

function setupOperator(
  f: RootFlags & Partial<RotateFlags>,
  closers: CloserStack,
): { op: RotationOperator; config: ServerConfig } {
  const config = loadServerConfig(f.config ? { file: f.config } : {});
  let checks;
  try {
    // With a `kubernetes:` section the servers publish ConfigMaps: those are channels too.
    const k = config.kubernetes;
    const auto = k
      ? [`kubernetes=kube:${k.context ?? ""}${k.kubeconfig ? `,kubeconfig=${k.kubeconfig}` : ""}`]
      : [];
    checks = [...auto, ...f.check].map(parseSourceSpec);
  } catch (err) {
    if (err instanceof SourceSpecError) usage(err.message);
    throw err;
  }
  const ref = rotationStateRef(config);
  // The state is written with the admin token (like `vault setup`), read with it too.
  let admin: VaultClient | undefined;
  const adminClient = (): VaultClient => {
    if (admin) return admin;
    const conn = adminConnection({ config });
    const token = conn.auth.method === "token" ? conn.auth.token : undefined;
    if (!token) {
      // No admin token: log in like the server (enough to read the state for `status`).
      const v = connectVault(vaultConnectionFromConfig(config.vault, process.env));
      closers.defer(v.close);
      admin = v.client;
      return admin;
    }
    admin = new VaultClient(conn, { token });
    closers.defer(() => admin?.close());
    return admin;
  };
  const store = rotationStore(ref, adminClient, stateKubeConfig(config));
  // `none`: no meshvault server (stock istiod fed by `meshvault cacerts`): only the channels.
  const servers = f.server.includes("none")
    ? []
    : f.server.length
      ? f.server
      : [`http://${config.listen.http}`];
  const op = new RotationOperator({
    config,
    store,
    admin: adminClient,
    servers: servers.map((s) => (/^https?:\/\//.test(s) ? s : `http://${s}`)),
    checks,
    ...(f.rootTtl ? { rootTtlSeconds: parseDuration(f.rootTtl) } : {}),
    ...(f.commonName ? { commonName: f.commonName } : {}),
    ...(f.crossSign ? { crossSign: true } : {}),
    ...("new" in f && f.new ? { newRotation: true } : {}),
    ...(f.importRoot ? { importRoot: { pem: readBundle(f.importRoot), source: f.importRoot } } : {}),
  });
  return { op, config };
}

export function formatStatus(obs: Observation, stateRef: string): string {
  const s = obs.state;
  const lines: string[] = [];
  if (!s) lines.push(`no root rotation recorded (state: ${stateRef})`);
  else {
    const since = s.history.at(-1)?.at ?? s.startedAt;
    lines.push(`rotation ${s.id} (${s.authority}): phase ${s.phase} since ${since} (state: ${stateRef})`);
    lines.push(
      `  old root  ${s.old.fingerprint}  ${s.old.subject}  expires ${s.old.notAfter}${s.old.issuer ? `  issuer ${s.old.issuer}` : ""}`,
    );
    lines.push(
      `  new root  ${s.next.fingerprint}  ${s.next.subject}  expires ${s.next.notAfter}${s.next.issuer ? `  issuer ${s.next.issuer}` : ""}`,
    );
    if (s.cross)
      lines.push(
        `  cross     ${s.cross.fingerprint}  the new root certified by the old one, expires ${s.cross.notAfter} (sent in switched)`,
      );
    for (const p of PHASES) {
      const at = enteredAt(s, p);
      if (at) lines.push(`  ${p.padEnd(10)} ${at.toISOString()}`);
    }
  }
  lines.push("servers:");
  for (const sv of obs.servers)
    lines.push(
      sv.view
        ? `  ${sv.url}: phase ${sv.view.phase}, signs under the ${sv.view.signer === "next" ? "new" : "current"} root, new signer ${sv.view.nextReady ? "ready" : "not ready"}` +
            (sv.view.oldLeavesValidUntil
              ? `, old-root leaves valid until ${sv.view.oldLeavesValidUntil}`
              : "") +
            (sv.view.sendsCross ? ", sends the cross-certificate" : "")
        : `  ${sv.url}: ${sv.error}`,
    );
  lines.push("channels:");
  for (const c of obs.channels) lines.push(`  ${c.name}: ${c.holds}${c.detail ? ` (${c.detail})` : ""}`);
  if (obs.retireAfter) lines.push(`retire possible after ${obs.retireAfter.at} (${obs.retireAfter.basis})`);
  if (obs.next === "done")
    lines.push(
      "rotation finished: the new root is the only one published (root rotate --new starts another)",
    );
  else if (obs.next) {
    lines.push(`next step: ${describeStep(obs.next)}`);
    lines.push(`  waits for: ${waitsFor(obs.next)}`);
  }
  if (obs.blockers.length) {
    lines.push("blocked by:");
    for (const b of obs.blockers) lines.push(`  - ${b}`);
  } else if (obs.next !== "done") lines.push("nothing blocks the next step");
  return `${lines.join("\n")}\n`;
}

export async function runRootStatus(f: RootFlags): Promise<void> {
  const { op, config, close } = await setup(f);
  try {
    const obs = await op.observe();
    process.stdout.write(
      f.output === "json" ? `${JSON.stringify(obs, null, 2)}\n` : formatStatus(obs, rotationStateRef(config)),
    );
  } finally {
    await close();
  }
}

export async function runRootRotate(f: RotateFlags): Promise<void> {
  if (f.until && !PHASES.includes(f.until as Phase))
    usage(`--until ${f.until}: expected one of ${PHASES.join(", ")}`);
  const { op, config, close } = await setup(f);
  const say = (m: string): void => void process.stdout.write(`${m}\n`);
  try {
    let obs = await op.observe();
    if (f.new && obs.state && obs.state.phase !== "retired")
      throw new Error(
        `--new: rotation ${obs.state.id} is at ${obs.state.phase}, not finished: take it to retired first (root rotate --until retired)`,
      );
    if (f.dryRun) {
      say(formatStatus(obs, rotationStateRef(config)).trimEnd());
      say("steps left:");
      const from = obs.next === "done" || obs.next === undefined ? undefined : obs.next;
      const start = from ? phaseIndex(from) : PHASES.length;
      const plan = from === "prepared" ? [...PHASES] : PHASES.slice(start);
      for (const p of plan) {
        const detail = (await op.step({ ...obs, next: p, blockers: [] }, true))[0] ?? describeStep(p);
        say(`  ${p}: ${detail}`);
        say(`      waits for: ${waitsFor(p)}`);
      }
      return;
    }
    const cur = obs.state;
    if (f.crossSign && cur && cur.phase !== "retired" && !cur.cross)
      process.stderr.write(
        `meshvault root: --cross-sign applies to the prepare step; rotation ${cur.id} was prepared without it and continues without a cross-certificate\n`,
      );
    if (f.importRoot && cur && cur.phase !== "retired")
      process.stderr.write(
        `meshvault root: --import-root applies to the prepare step; rotation ${cur.id} is at ${cur.phase} and continues with its new root ${cur.next.fingerprint}\n`,
      );
    const deadline = Date.now() + parseDuration(f.wait) * 1000;
    const target = f.until as Phase | undefined;
    const at = obs.state?.phase;
    if (target && at && at !== "retired" && phaseIndex(at) >= phaseIndex(target)) {
      say(`rotation ${obs.state!.id} is already at ${at}`);
      return;
    }
    let moved = false;
    for (;;) {
      const did = await op.step(obs, false);
      for (const d of did) say(d);
      if (did.length) moved = true;
      obs = await op.observe();
      if ((moved && (!target || obs.state?.phase === target)) || obs.next === "done") break;
      // Without --until: one step, or report what blocks it. What blocked the step may have
      // cleared by this observation (a server applied the phase meanwhile): then step now
      // rather than print "nothing blocks" and exit 1.
      if (!target && obs.blockers.length) break;
      if (Date.now() > deadline) {
        say(formatStatus(obs, rotationStateRef(config)).trimEnd());
        throw new Error(`gave up waiting after ${f.wait}: ${obs.blockers.join("; ")}`);
      }
      if (!did.length) await new Promise((r) => setTimeout(r, parseDuration(f.interval) * 1000));
    }
    if (!moved) {
      say(formatStatus(obs, rotationStateRef(config)).trimEnd());
      if (obs.next !== "done") process.exitCode = 1;
    }
  } finally {
    await close();
  }
}
