import assert from "node:assert/strict";
import { join } from "node:path";
import { probeFs, readKeyslotMemory, recallKeyslots, saveKeyslotMemory } from "./keyfile.ts";
import type { KeyFile, Volume } from "../discovery/mod.ts";

async function run(cmd: string, ...args: string[]): Promise<void> {
  const r = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  assert.ok(r.success, `${cmd} ${args.join(" ")}: ${new TextDecoder().decode(r.stderr)}`);
}

/** A sparse image of `mib` MiB made by `mkfs` (the real tools: what a USB stick carries). */
async function image(dir: string, name: string, mib: number, mkfs: string, ...args: string[]): Promise<string> {
  const path = join(dir, name);
  await Deno.writeFile(path, new Uint8Array());
  await Deno.truncate(path, mib << 20);
  await run(mkfs, ...args, path);
  return path;
}

Deno.test("probeFs reads the UUID and label of ext4 and FAT (12/16 and 32) as blkid shows them", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const ext4 = await image(
      dir,
      "ext4",
      8,
      "mke2fs",
      "-q",
      "-F",
      "-t",
      "ext4",
      "-L",
      "CSKEY",
      "-U",
      "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
    );
    assert.deepEqual(await probeFs(ext4), {
      type: "ext4",
      uuid: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
      label: "CSKEY",
    });
    const fat16 = await image(dir, "fat16", 16, "mkfs.fat", "-F", "16", "-n", "KEYS", "-i", "1a2b3c4d");
    assert.deepEqual(await probeFs(fat16), { type: "vfat", uuid: "1A2B-3C4D", label: "KEYS" });
    const fat32 = await image(dir, "fat32", 40, "mkfs.fat", "-F", "32", "-i", "00ff00aa");
    assert.deepEqual(await probeFs(fat32), { type: "vfat", uuid: "00FF-00AA", label: "" });
    const blank = join(dir, "blank");
    await Deno.writeFile(blank, new Uint8Array(4096));
    assert.equal(await probeFs(blank), null);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("recallKeyslots: the last report's keyslot per key file, set only where crypttab names none and the path is the same", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const report = `${dir}/last.json`;
    const kept = `${dir}/keyslots.json`;
    const kf = (path: string, keyslot?: number): KeyFile => ({
      path,
      offset: 0,
      on: [],
      ...(keyslot === undefined ? {} : { keyslot }),
    });
    const volume = (uuid: string, keyFile?: KeyFile) => ({ uuid, keyFile }) as unknown as Volume;
    const plan = {
      lock: [
        volume("u-learned", kf("/etc/keys/home.key")),
        volume("u-crypttab", kf("/etc/keys/b.key", 3)),
        volume("u-moved", kf("/etc/keys/new.key")),
        volume("u-none"),
      ],
    };
    const none = await readKeyslotMemory(report, kept);
    recallKeyslots(plan, none);
    assert.deepEqual(none, {}, "no report yet: nothing learned");
    assert.equal(plan.lock[0].keyFile!.learnedKeyslot, undefined);
    await Deno.writeTextFile(
      report,
      JSON.stringify({
        facts: {
          keyFileSlots: {
            "u-learned": { path: "/etc/keys/home.key", keyslot: 1 },
            "u-crypttab": { path: "/etc/keys/b.key", keyslot: 1 },
            "u-moved": { path: "/etc/keys/old.key", keyslot: 2 },
            "u-bad": { path: "/x", keyslot: "1" },
            "__proto__": { path: "/etc/keys/home.key", keyslot: 7 },
          },
        },
      }),
    );
    const memory = await readKeyslotMemory(report, kept);
    recallKeyslots(plan, memory);
    assert.equal(plan.lock[0].keyFile!.learnedKeyslot, 1);
    assert.equal(plan.lock[1].keyFile!.learnedKeyslot, undefined, "keyslot= wins");
    assert.equal(plan.lock[2].keyFile!.learnedKeyslot, undefined, "another key file now");
    assert.deepEqual(
      Object.keys(memory).sort(),
      ["u-crypttab", "u-learned", "u-moved"],
      "carried on, malformed dropped",
    );
    await Deno.writeTextFile(report, "{ not json");
    assert.deepEqual(await readKeyslotMemory(report, kept), {});
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("saveKeyslotMemory: the keyslots learned outlive a reboot (the report in /run does not); written only when they change", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const report = `${dir}/run/last.json`;
    const kept = `${dir}/var/lib/cryptsleep/keyslots.json`;
    const learned = { "u-data": { path: "/root/data.key", keyslot: 1 } };
    assert.equal(await saveKeyslotMemory({}, kept), false, "nothing learned, no file: nothing written");
    await assert.rejects(Deno.stat(kept), Deno.errors.NotFound);
    assert.equal(await saveKeyslotMemory(learned, kept), true);
    assert.equal((await Deno.stat(kept)).mode! & 0o777, 0o644);
    assert.equal(await saveKeyslotMemory(structuredClone(learned), kept), false, "the same again: no write");
    // a reboot: /run is empty, the file is read
    assert.deepEqual(await readKeyslotMemory(report, kept), learned);
    // this boot's report has the final say: a slot it forgot (that key file no longer opened it) stays forgotten
    await Deno.mkdir(`${dir}/run`);
    await Deno.writeTextFile(report, JSON.stringify({ facts: { keyFileSlots: {} } }));
    assert.deepEqual(await readKeyslotMemory(report, kept), {});
    assert.equal(await saveKeyslotMemory({}, kept), true, "the forgetting is kept too");
    assert.deepEqual(JSON.parse(await Deno.readTextFile(kept)), {});
    // a report from before keyFileSlots existed: the file still counts
    await saveKeyslotMemory(learned, kept);
    await Deno.writeTextFile(report, JSON.stringify({ facts: {} }));
    assert.deepEqual(await readKeyslotMemory(report, kept), learned);
    // a damaged file: nothing learned from it, and the next save replaces it
    await Deno.writeTextFile(kept, "{ half");
    assert.deepEqual(await readKeyslotMemory(report, kept), {});
    assert.equal(await saveKeyslotMemory(learned, kept), true);
    assert.deepEqual(await readKeyslotMemory(report, kept), learned);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
