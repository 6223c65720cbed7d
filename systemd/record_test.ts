import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { join } from "node:path";
import { type InstallRecord, readRecord, RECORD, recordText } from "./record.ts";

function record(bytes: Uint8Array[]): InstallRecord {
  return {
    version: 1,
    installedAt: "2025-01-01T00:00:00.000Z",
    exec: "/usr/bin/cryptsleep",
    files: bytes.map((b, i) => ({
      path: `/etc/f${i}`,
      before: { kind: "file", bytes: b, text: null, mode: 0o600 },
      wrote: "",
    })),
    createdDirs: [],
  };
}

/** Reads `text` as the record under a scratch root. */
async function readBack(text: string): Promise<InstallRecord | null> {
  const root = await Deno.makeTempDir({ prefix: "cryptsleep-record-" });
  try {
    await Deno.mkdir(join(root, "var/lib/cryptsleep"), { recursive: true });
    await Deno.writeTextFile(join(root, RECORD), text);
    return await readRecord(root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

function fileBytes(rec: InstallRecord | null, i: number): Uint8Array {
  const before = rec?.files[i].before;
  assert.equal(before?.kind, "file");
  return before.bytes;
}

Deno.test("a file's bytes go through the record as Buffer's base64 and come back the same", async () => {
  const every = Uint8Array.from({ length: 256 }, (_, i) => i);
  // larger than one fromCharCode slice, and not UTF-8
  const large = Uint8Array.from({ length: 100_000 }, (_, i) => (i * 7919) % 251);
  const cases = [
    new Uint8Array(),
    Uint8Array.of(0),
    Uint8Array.of(0xff, 0xfe),
    new TextEncoder().encode("a=b\n"),
    every,
    large,
  ];
  const text = recordText(record(cases));
  const raw = JSON.parse(text);
  cases.forEach((b, i) => assert.equal(raw.files[i].before.base64, Buffer.from(b).toString("base64")));
  const back = await readBack(text);
  cases.forEach((b, i) => assert.deepEqual(fileBytes(back, i), b));
  assert.equal(back?.files[4].before.kind === "file" && back.files[4].before.text?.length, 256);
});

Deno.test("base64 that Buffer read leniently (line breaks, no padding, URL alphabet, junk) reads as Buffer read it", async () => {
  const odd = ["", "A", "AB", "YQ", "YQ=", "YQ===", "YWI", "AAAAA", "AAAAAA", "YQ==YQ==", "a b\nc", "-_-_", "+/+/"];
  odd.push("YW\nJj", "Y!Q", " YWJj ", "YWJjZA=x", "=YQ", "YWJ=", "€YQ", "YWJj\r\nZGVm\r\n", "Zm9v\tYmFy");
  const raw = JSON.parse(recordText(record(odd.map(() => new Uint8Array()))));
  odd.forEach((s, i) => raw.files[i].before.base64 = s);
  const back = await readBack(JSON.stringify(raw));
  odd.forEach((s, i) =>
    assert.deepEqual(fileBytes(back, i), new Uint8Array(Buffer.from(s, "base64")), JSON.stringify(s))
  );
});
