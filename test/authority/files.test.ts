import { test } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FilesAuthority, type ReloadEvent } from "../../src/authority/files.js";
import { recordingLog } from "../helpers/recording-log.js";
import { generateKeyPairFor, privateKeyPem } from "../../src/pki/keys.js";
import { buildCsr, parseCsr } from "../../src/pki/csr.js";
import { issueCa, parseIssued, createSigner } from "../../src/pki/issue.js";
import { parseCertificate } from "../../src/pki/certificate.js";
import { workloadId } from "../../src/pki/spiffe.js";
import type { SignRequest } from "../../src/authority/authority.js";
import { makeTestCa, type TestCa } from "../helpers/pki-fixtures.js";
import { opensslVerify } from "../helpers/openssl.js";
import { waitFor } from "../helpers/wait.js";
import { FakeClock } from "../helpers/fake-clock.js";
import { startServerProcess } from "../helpers/server-process.js";

const ID = workloadId("cluster.local", "default", "sleep");
const request: SignRequest = {
  csr: parseCsr(buildCsr(generateKeyPairFor("ec-p256").privateKey, {})),
  ttlSeconds: 3600,
};

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), "meshvault-files-"));
}

type Files = Record<string, string>;

function pluginFiles(ca: TestCa): Files {
  return {
    "ca-cert.pem": ca.intermediate.pem,
    "ca-key.pem": privateKeyPem(ca.signer.key),
    "cert-chain.pem": ca.intermediate.pem + ca.root.pem,
    "root-cert.pem": ca.root.pem,
  };
}

function tlsFiles(ca: TestCa): Files {
  return {
    "tls.crt": ca.intermediate.pem + ca.root.pem,
    "tls.key": privateKeyPem(ca.signer.key),
    "ca.crt": ca.root.pem,
  };
}

function writeFiles(dir: string, files: Files): void {
  for (const [name, text] of Object.entries(files))
    writeFileSync(join(dir, name), text, { mode: name.includes("key") ? 0o600 : 0o644 });
}

/** Lays files out as a Kubernetes Secret volume: `name -> ..data/name`, `..data -> ..<version>`. */
function writeSecretVolume(dir: string, files: Files, version: string): void {
  const versionDir = join(dir, `..${version}`);
  mkdirSync(versionDir);
  writeFiles(versionDir, files);
  symlinkSync(`..${version}`, join(dir, "..data_tmp"));
  renameSync(join(dir, "..data_tmp"), join(dir, "..data")); // the atomic swap kubelet does
  for (const name of Object.keys(files)) {
    try {
      symlinkSync(join("..data", name), join(dir, name));
    } catch {
      // Already linked from the previous version.
    }
  }
}

function nextEvent(a: FilesAuthority, timeoutMs = 5000): Promise<ReloadEvent> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error("no reload event"));
    }, timeoutMs);
    const off = a.onReload((e) => {
      clearTimeout(timer);
      off();
      resolve(e);
    });
  });
}

async function signedBy(a: FilesAuthority): Promise<string> {
  const chain = await a.sign(request, ID);
  return (
    parseCertificate(chain.leafPem)
      .issuer.map((x) => x.value)
      .join("/") +
    "|" +
    chain.rootsPem[0]
  );
}

function verifyWithOpenssl(rootPem: string, chain: { leafPem: string; intermediatesPem: string[] }): void {
  const [ok, out] = opensslVerify(rootPem, chain.intermediatesPem.join(""), chain.leafPem, "sslclient");
  assert.ok(ok, out);
}

for (const [layout, make] of [
  ["plug-in", pluginFiles],
  ["tls", tlsFiles],
] as const) {
  test(`loads the ${layout} layout and signs certificates openssl verifies against the root`, async () => {
    const dir = tempDir();
    const ca = makeTestCa();
    writeFiles(dir, make(ca));
    const a = new FilesAuthority({ dir, log: recordingLog(), pollIntervalMs: 0 });
    try {
      await a.start();
      assert.equal(a.ready().ready, true);
      assert.equal(a.currentLayout()?.name, layout === "tls" ? "tls" : "plugin");
      const chain = await a.sign(request, ID);
      assert.deepEqual(chain.rootsPem, [ca.root.pem]);
      assert.deepEqual(chain.intermediatesPem, [ca.intermediate.pem]);
      assert.deepEqual(a.trustBundle(), [ca.root.pem]);
      verifyWithOpenssl(ca.root.pem, chain);
    } finally {
      await a.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test("plug-in layout without cert-chain.pem works when ca-cert.pem is issued by the root", async () => {
  const dir = tempDir();
  const ca = makeTestCa();
  const files = pluginFiles(ca);
  delete files["cert-chain.pem"];
  writeFiles(dir, files);
  const a = new FilesAuthority({ dir, pollIntervalMs: 0 });
  try {
    await a.start();
    verifyWithOpenssl(ca.root.pem, await a.sign(request, ID));
  } finally {
    await a.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a Secret-volume swap to a new CA and root is picked up without restart; in-flight signs never fail", async () => {
  const dir = tempDir();
  const oldCa = makeTestCa();
  const newCa = makeTestCa("ec-p384");
  writeSecretVolume(dir, pluginFiles(oldCa), "v1");
  const log = recordingLog();
  const a = new FilesAuthority({ dir, log, pollIntervalMs: 60_000, debounceMs: 50 });
  try {
    await a.start();
    assert.match(await signedBy(a), /test intermediate/);
    const before = await a.sign(request, ID);
    verifyWithOpenssl(oldCa.root.pem, before);

    let stop = false;
    let signed = 0;
    const failures: unknown[] = [];
    const loop = async (): Promise<void> => {
      while (!stop) {
        try {
          const c = await a.sign(request, ID);
          assert.ok(c.rootsPem.length === 1 && c.intermediatesPem.length === 1);
          signed++;
        } catch (err) {
          failures.push(err);
        }
        await new Promise((r) => setImmediate(r));
      }
    };
    const loops = [loop(), loop(), loop(), loop()];
    const event = nextEvent(a);
    writeSecretVolume(dir, pluginFiles(newCa), "v2");
    const e = await event;
    // Keep signing after the swap too: ten more signatures, however long they take.
    const atSwap = signed;
    await waitFor("signatures after the swap", async () => signed >= atSwap + 10);
    stop = true;
    await Promise.all(loops);
    assert.deepEqual(failures, []);
    assert.ok(signed > 10, `only ${signed} signs ran during the swap`);

    assert.equal(e.ok, true);
    assert.equal(e.ok && e.rootsChanged, true);
    assert.deepEqual(a.trustBundle(), [newCa.root.pem]);
    const after = await a.sign(request, ID);
    verifyWithOpenssl(newCa.root.pem, after);
    assert.deepEqual(after.intermediatesPem, [newCa.intermediate.pem]);
    assert.deepEqual(a.reloadCounts(), { succeeded: 1, failed: 0 });
    assert.ok(log.at("warn").some((m) => /root certificate changed/.test(m)));
  } finally {
    await a.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("polling picks up a change even without a watch event", async () => {
  const dir = tempDir();
  const oldCa = makeTestCa();
  const newCa = makeTestCa();
  writeFiles(dir, pluginFiles(oldCa));
  const a = new FilesAuthority({ dir, pollIntervalMs: 100, debounceMs: 20 });
  try {
    await a.start();
    const event = nextEvent(a);
    writeFiles(dir, pluginFiles(newCa));
    assert.equal((await event).ok, true);
    verifyWithOpenssl(newCa.root.pem, await a.sign(request, ID));
  } finally {
    await a.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a bad new set is refused, reported loudly, and the old CA keeps signing", async () => {
  const dir = tempDir();
  const ca = makeTestCa();
  const other = makeTestCa();
  writeFiles(dir, pluginFiles(ca));
  const log = recordingLog();
  const a = new FilesAuthority({ dir, log, pollIntervalMs: 0, debounceMs: 30 });
  try {
    await a.start();
    const cases: [string, Files, RegExp][] = [
      [
        "key not matching",
        { ...pluginFiles(ca), "ca-key.pem": privateKeyPem(other.signer.key) },
        /ca-key\.pem does not match the certificate in .*ca-cert\.pem/,
      ],
      [
        "garbage certificate",
        { ...pluginFiles(ca), "ca-cert.pem": "garbage\n" },
        /ca-cert\.pem: no PEM CERTIFICATE/,
      ],
      [
        "garbage key",
        {
          ...pluginFiles(ca),
          "ca-key.pem": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        },
        /ca-key\.pem is not a readable private key/,
      ],
      [
        "chain to a different root",
        { ...pluginFiles(ca), "root-cert.pem": other.root.pem },
        /does not chain to the root.*root-cert\.pem/,
      ],
    ];
    let failed = 0;
    for (const [name, files, reason] of cases) {
      const event = nextEvent(a);
      writeFiles(dir, files);
      const e = await event;
      failed++;
      assert.equal(e.ok, false, name);
      assert.match(e.ok ? "" : e.error, reason, name);
      assert.match(a.lastReloadError()?.message ?? "", reason, name);
      assert.equal(a.reloadCounts().failed, failed, name);
      assert.ok(
        log.records.some(
          (r) =>
            r.level === "error" &&
            /refused the new CA files/.test(r.msg) &&
            r.obj.dir === dir &&
            reason.test(String(r.obj.reason)),
        ),
        `${name}: error logged`,
      );
      const chain = await a.sign(request, ID);
      assert.deepEqual(chain.rootsPem, [ca.root.pem], name);
      verifyWithOpenssl(ca.root.pem, chain);
      assert.equal(a.ready().ready, true);
    }
    for (const r of log.records) assert.doesNotMatch(JSON.stringify(r), /BEGIN|PRIVATE KEY-----/);
    // Restoring the loaded set clears the error.
    writeFiles(dir, pluginFiles(ca));
    await a.reload();
    assert.equal(a.lastReloadError(), undefined);
  } finally {
    await a.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a half-written update is not reported once the writer finishes", async () => {
  const dir = tempDir();
  const ca = makeTestCa();
  const next = makeTestCa();
  writeFiles(dir, pluginFiles(ca));
  const log = recordingLog();
  // The quiet periods run on a fake clock, so "the writer is slower than the debounce" cannot
  // happen by accident: each file lands while the authority waits, and time moves on only after.
  const clock = new FakeClock();
  const a = new FilesAuthority({ dir, log, pollIntervalMs: 0, debounceMs: 200, clock });
  try {
    await a.start();
    const event = nextEvent(a);
    const files = pluginFiles(next);
    const [firstName, ...rest] = ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"];
    const write = (name: string): void => writeFileSync(join(dir, name), files[name]!, { mode: 0o600 });
    write(firstName!);
    // Read mid-update, as a poll would (no debounce on that path).
    const round = a.reload();
    for (const [i, name] of rest.entries()) {
      // The incomplete set was read and refused internally (a debug line); a quiet period is pending.
      await waitFor(`incomplete set #${i + 1} read`, async () => log.at("debug").length >= i + 1);
      write(name);
      await clock.advance(200);
    }
    const e = await event;
    await round;
    assert.equal(e.ok, true);
    assert.equal(log.at("debug").length, 3, "three incomplete sets were read on the way");
    assert.deepEqual(log.at("error"), []);
    assert.deepEqual(a.reloadCounts(), { succeeded: 1, failed: 0 });
    assert.deepEqual(a.trustBundle(), [next.root.pem]);
  } finally {
    await a.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the poll runs on the injected clock and close() cancels it", async () => {
  const dir = tempDir();
  writeFiles(dir, pluginFiles(makeTestCa()));
  const clock = new FakeClock();
  const a = new FilesAuthority({ dir, pollIntervalMs: 10_000, clock });
  try {
    await a.start();
    assert.deepEqual(clock.pending(), [10_000]);
    await clock.advance(10_000);
    assert.deepEqual(clock.pending(), [10_000], "polled (nothing changed) and re-armed");
  } finally {
    await a.close();
    rmSync(dir, { recursive: true, force: true });
  }
  assert.deepEqual(clock.pending(), []);
});

async function startError(files: Files, pre?: (dir: string) => void): Promise<string> {
  const dir = tempDir();
  writeFiles(dir, files);
  pre?.(dir);
  const a = new FilesAuthority({ dir, pollIntervalMs: 0 });
  try {
    await a.start();
    assert.fail("start succeeded");
  } catch (err) {
    assert.equal((err as Error).name, "FilesAuthorityError");
    assert.ok((err as Error).message.includes(dir), "names the directory");
    return (err as Error).message;
  } finally {
    await a.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

test("startup errors name the file, the cause and the fix", async () => {
  const ca = makeTestCa();
  const other = makeTestCa();
  const noKey = pluginFiles(ca);
  delete noKey["ca-key.pem"];
  assert.match(await startError(noKey), /ca-key\.pem is missing: the directory must hold/);
  const noRoot = tlsFiles(ca);
  delete noRoot["ca.crt"];
  assert.match(await startError(noRoot), /ca\.crt is missing/);
  assert.match(await startError({}), /no CA files in .*neither ca-cert\.pem nor tls\.crt/);
  assert.match(
    await startError({ ...pluginFiles(ca), "ca-key.pem": privateKeyPem(other.signer.key) }),
    /ca-key\.pem does not match the certificate in .*ca-cert\.pem.*put the key that belongs/,
  );
  assert.match(
    await startError({ ...tlsFiles(ca), "ca.crt": other.root.pem }),
    /does not chain to the root.*tls\.crt must lead from the signing CA to a root in .*ca\.crt/,
  );
  // root reads anything, so the permission case only means something for other users.
  if (process.getuid?.() !== 0)
    assert.match(
      await startError(pluginFiles(ca), (dir) => chmodSync(join(dir, "ca-key.pem"), 0o000)),
      /cannot read .*ca-key\.pem \(EACCES\)/,
    );
});

test("an expired CA certificate is refused at startup with the expiry date", async () => {
  const rootKey = generateKeyPairFor("ec-p256");
  const long = 400 * 86400;
  const root = parseIssued(
    issueCa({
      subject: { commonName: "old root" },
      key: rootKey.privateKey,
      ttlSeconds: long * 2,
      now: new Date(Date.now() - long * 1000),
    }),
  );
  const intKey = generateKeyPairFor("ec-p256");
  const intermediate = parseIssued(
    issueCa(
      {
        subject: { commonName: "old intermediate" },
        key: intKey.publicKey,
        ttlSeconds: 86400,
        now: new Date(Date.now() - long * 1000),
      },
      createSigner(root, rootKey.privateKey),
    ),
  );
  const msg = await startError({
    "ca-cert.pem": intermediate.pem,
    "ca-key.pem": privateKeyPem(intKey.privateKey),
    "root-cert.pem": root.pem,
  });
  assert.match(
    msg,
    new RegExp(`ca-cert\\.pem .* expired at ${intermediate.notAfter.toISOString()}: replace`),
  );
});

test("a CA key readable by group or others warns; 0600 does not", async () => {
  for (const [mode, warns] of [
    [0o644, true],
    [0o600, false],
  ] as const) {
    const dir = tempDir();
    writeFiles(dir, tlsFiles(makeTestCa()));
    chmodSync(join(dir, "tls.key"), mode);
    const log = recordingLog();
    const a = new FilesAuthority({ dir, log, pollIntervalMs: 0 });
    try {
      await a.start();
      const warned = log.records.some(
        (r) =>
          r.level === "warn" &&
          /readable by group or others.*chmod 600/.test(r.msg) &&
          String(r.obj.path).endsWith("tls.key"),
      );
      assert.equal(warned, warns, `mode ${mode.toString(8)}`);
    } finally {
      await a.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }
});

test("meshvault server (files): a swapped CA and a refused one are counted in meshvault_ca_reloads_total on /metrics", async () => {
  const dir = tempDir();
  const caDir = join(dir, "cacerts");
  mkdirSync(caDir);
  writeSecretVolume(caDir, pluginFiles(makeTestCa()), "v1");
  const server = await startServerProcess("files-reloads", dir, {
    authority: { type: "files", dir: caDir, pollInterval: "1s" },
  });
  const reloads = async (): Promise<string> => {
    const text = await (await fetch(`http://${server.http}/metrics`)).text();
    return text
      .split("\n")
      .filter((l) => l.startsWith("meshvault_ca_reloads_total{"))
      .sort()
      .join(" ");
  };
  try {
    writeSecretVolume(caDir, pluginFiles(makeTestCa("ec-p384")), "v2");
    await waitFor("the swap counted", async () => /result="ok"\} 1/.test(await reloads()));
    // A key that does not match its certificate: refused, counted, the old CA kept.
    const bad = pluginFiles(makeTestCa());
    bad["ca-key.pem"] = privateKeyPem(generateKeyPairFor("ec-p256").privateKey);
    writeSecretVolume(caDir, bad, "v3");
    await waitFor("the refusal counted", async () => /result="refused"\} 1/.test(await reloads()));
    assert.match(await reloads(), /result="ok"\} 1/);
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
