import { test } from "node:test";
import assert from "node:assert/strict";
import {
  decodeOne,
  decodeOid,
  oid,
  readNode,
  time,
  parseTime,
  unsignedInteger,
  DerError,
} from "../../src/pki/der.js";
import { decodePem, encodePem, joinPem, splitCertificates, PemError } from "../../src/pki/pem.js";

test("OID round trip, including large arcs", () => {
  for (const o of ["1.2.840.113549.1.1.11", "2.5.29.17", "1.3.6.1.4.1.311.60.2.1.3", "2.999.1"]) {
    assert.equal(decodeOid(decodeOne(oid(o)).value), o);
  }
});

test("DER reader refuses truncation, indefinite and non-minimal lengths, trailing bytes", () => {
  assert.throws(() => readNode(Uint8Array.of(0x30, 0x05, 1, 2)), /truncated/);
  assert.throws(() => readNode(Uint8Array.of(0x30, 0x80, 0, 0)), /indefinite/);
  assert.throws(() => readNode(Uint8Array.of(0x04, 0x81, 0x05, 1, 2, 3, 4, 5)), /non-minimal/);
  assert.throws(
    () => decodeOne(Uint8Array.of(0x05, 0x00, 0x00)),
    (e: Error) => e instanceof DerError && /trailing garbage/.test(e.message),
  );
});

test("integers get a sign byte only when needed", () => {
  assert.deepEqual(Array.from(unsignedInteger(Uint8Array.of(0x7f))), [0x02, 0x01, 0x7f]);
  assert.deepEqual(Array.from(unsignedInteger(Uint8Array.of(0x80))), [0x02, 0x02, 0x00, 0x80]);
  assert.deepEqual(Array.from(unsignedInteger(Uint8Array.of(0, 0, 5))), [0x02, 0x01, 0x05]);
});

test("times: UTCTime before 2050, GeneralizedTime after, both parse back", () => {
  const a = new Date("2030-01-02T03:04:05Z");
  const b = new Date("2060-01-02T03:04:05Z");
  assert.equal(time(a)[0], 0x17);
  assert.equal(time(b)[0], 0x18);
  assert.equal(parseTime(decodeOne(time(a))).toISOString(), a.toISOString());
  assert.equal(parseTime(decodeOne(time(b))).toISOString(), b.toISOString());
});

test("PEM encode/decode/split/join", () => {
  const one = encodePem("CERTIFICATE", Uint8Array.of(1, 2, 3));
  const two = encodePem("CERTIFICATE", Uint8Array.of(4, 5));
  const bundle = joinPem([one, "subject=whatever\n" + two.trimEnd()]);
  assert.deepEqual(splitCertificates(bundle), [one, two]);
  assert.deepEqual(Array.from(decodePem(bundle)[1]!.der), [4, 5]);
  assert.throws(() => decodePem("-----BEGIN CERTIFICATE-----\nAAA*\n-----END CERTIFICATE-----"), PemError);
  assert.throws(() => decodePem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END PRIVATE KEY-----"), PemError);
  for (const bad of ["AA=A", "AAAAA", "AAA=\nAAAA", "AA==\n=", "AAAA-AAA"])
    assert.throws(
      () => decodePem(`-----BEGIN CERTIFICATE-----\n${bad}\n-----END CERTIFICATE-----`),
      PemError,
      bad,
    );
  const wrapped = decodePem("-----BEGIN CERTIFICATE-----\r\nAQID\r\nBA==\r\n-----END CERTIFICATE-----");
  assert.deepEqual(Array.from(wrapped[0]!.der), [1, 2, 3, 4]);
  assert.throws(() => decodePem("-----BEGIN CERTIFICATE-----\nAAAA\n"), /not terminated/);
});
