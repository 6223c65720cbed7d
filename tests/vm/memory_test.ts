/**
 * Little RAM: the unlock after wake runs Argon2 with the memory the largest keyslot asks for, with userspace frozen and
 * no swap to lean on (swap may sit on a locked volume). If it did not fit, the kernel's OOM killer would kill a frozen
 * application (or the cycle) to make room. So preflight counts what is available against Argon2's memory plus the
 * cycle's own, and refuses up front when it does not fit; when it does, the cycle must go through with nothing killed.
 *
 * A 512 MiB guest; a volume on an image file with a 96 MiB Argon2 keyslot; RAM taken by a tmpfs file until
 * MemAvailable is just below, then just above, what preflight asks for; a process with 32 MiB of its own memory
 * stands for the application the OOM killer would pick. Full tier only (a feature of preflight with a CI case of its
 * own in cycle/requirements_test.ts).
 *
 * And swap on a LUKS volume with pages in it (#10's memory-pressure load): pages swapped out before the lock must
 * wait on the locked volume while asleep and come back intact after the unlock; nothing may read them before it.
 */
import assert from "node:assert/strict";
import {
  answerPrompt,
  CONSOLE,
  FULL_TIER,
  fullCycle,
  SLOW,
  startSuspend,
  suspendExit,
  systemState,
} from "./cycle_helpers.ts";
import { boot, keyHalves, type VM, volumeKey } from "./harness.ts";

const ARGON2_MIB = 96;
/** What preflight adds for the cycle itself (cycle/requirements.ts AGENT_HEADROOM_KIB). */
const HEADROOM_MIB = 128;

/** MemAvailable in MiB. */
async function available(vm: VM): Promise<number> {
  const r = await vm.sh("awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo");
  return Number(r.out.trim().split("\n").at(-1));
}

/** Grows (or shrinks) the tmpfs file /run/hog until MemAvailable is `target` MiB, give or take a few. */
async function takeRamUntil(vm: VM, target: number): Promise<number> {
  for (let round = 0; round < 6; round++) {
    const now = await available(vm);
    if (Math.abs(now - target) <= 4) return now;
    const size = Number((await vm.sh("stat -c %s /run/hog 2>/dev/null || echo 0")).out.trim().split("\n").at(-1));
    const want = Math.max(0, Math.floor(size / 1048576) + now - target);
    // shrinking cuts the file; growing appends (a rewrite would free all of it first)
    const r = await vm.sh(
      want <= size / 1048576
        ? `truncate -s ${want}M /run/hog; echo ok`
        : `dd if=/dev/zero bs=1M count=${want - Math.floor(size / 1048576)} >> /run/hog 2>/dev/null; echo ok`,
      { timeoutMs: 120_000 },
    );
    assert.match(r.out, /ok/, r.out);
  }
  return await available(vm);
}

Deno.test({
  name: "little RAM: refused up front when Argon2 would not fit, and through with nothing OOM-killed when it does",
  ignore: !FULL_TIER,
  ...SLOW,
  fn: async (t) => {
    await using vm = await boot({ ramMiB: 512 });
    const pass = vm.guest.passphrase;
    const setup = await vm.sh(
      `truncate -s 48M /root/big.img && printf %s '${pass}' | cryptsetup luksFormat --batch-mode --type luks2 ` +
        `--pbkdf argon2id --pbkdf-memory ${
          ARGON2_MIB * 1024
        } --pbkdf-force-iterations 4 --key-file - /root/big.img && ` +
        `printf %s '${pass}' | cryptsetup open --key-file - /root/big.img big && mkfs.ext4 -F -q /dev/mapper/big && ` +
        "mkdir -p /mnt/big && mount /dev/mapper/big /mnt/big && echo kept > /mnt/big/kept && sync && echo ready",
      { timeoutMs: 300_000 },
    );
    assert.match(setup.out, /ready/, setup.out);
    // the application: 32 MiB of its own, the OOM killer's pick if the unlock ran out of memory
    const app = await vm.sh(
      "deno eval 'const m = new Uint8Array(32 << 20).fill(7); setInterval(() => m[0]++, 1000)' >/dev/null 2>&1 & " +
        "echo $! > /run/app.pid; sleep 5; cat /run/app.pid",
    );
    const appPid = app.out.trim().split("\n").at(-1);
    const need = ARGON2_MIB + HEADROOM_MIB;
    const before = await systemState(vm);

    await t.step("MemAvailable just below what the unlock needs: refused before anything is frozen", async () => {
      const avail = await takeRamUntil(vm, need - 8);
      assert.ok(avail < need, `MemAvailable ${avail} MiB`);
      const from = vm.console.length;
      await startSuspend(vm, "", CONSOLE);
      assert.equal(await suspendExit(vm), 3, vm.console.slice(from));
      const out = vm.console.slice(from);
      assert.match(out, /MemAvailable \d+ MiB < \d+ MiB/, out);
      assert.match(out, /--pbkdf-memory/, out);
      assert.deepEqual(vm.eventsSinceClear("SUSPEND"), [], "no S3");
      assert.equal(await systemState(vm), before, "nothing frozen or locked");
    });

    await t.step("just above: the cycle goes through; no OOM kill, the application lives", async () => {
      // the program's own start takes some 20 MiB before preflight reads MemAvailable
      const avail = await takeRamUntil(vm, need + 36);
      assert.ok(avail >= need, `MemAvailable ${avail} MiB`);
      const from = vm.console.length;
      await startSuspend(vm, "", CONSOLE);
      const asleep = await Promise.race([
        vm.waitForEvent("SUSPEND", 300_000).then(() => true),
        suspendExit(vm, 300_000).then(() => false),
      ]);
      assert.ok(asleep, `no S3:\n${vm.console.slice(from)}`);
      await vm.wake();
      await answerPrompt(vm); // the root's; the same passphrase opens big
      assert.equal(await suspendExit(vm), 0, vm.console.slice(from));
      const oom = await vm.sh("dmesg | grep -ciE 'out of memory|oom-kill|invoked oom-killer' || true");
      assert.equal(oom.out.trim().split("\n").at(-1), "0", `the OOM killer ran:\n${vm.console.slice(from)}`);
      assert.equal((await vm.sh(`kill -0 ${appPid} && echo alive`)).out.trim(), "alive");
      assert.equal((await vm.sh("cat /mnt/big/kept")).out.trim(), "kept");
    });
  },
});

Deno.test({
  name: "swap on a LUKS volume with pages in it: locked with the rest, its key not in RAM, the pages come back intact",
  ignore: !FULL_TIER,
  ...SLOW,
  fn: async () => {
    await using vm = await boot({ ramMiB: 512, dataDisk: true });
    const pass = vm.guest.passphrase;
    // swap straight on the data disk's volume; a tmpfs file written from a cgroup held to 16 MiB: the rest of its
    // 40 MiB must go to that swap (shmem pages are swapped like anonymous ones)
    const setup = await vm.sh(
      `printf %s '${pass}' | cryptsetup open --key-file - /dev/vdc swapvol && mkswap /dev/mapper/swapvol && ` +
        "swapon /dev/mapper/swapvol && mkdir -p /mnt/hog && mount -t tmpfs -o size=64M tmpfs /mnt/hog && " +
        "echo +memory > /sys/fs/cgroup/cgroup.subtree_control && mkdir -p /sys/fs/cgroup/hog && " +
        "echo 16M > /sys/fs/cgroup/hog/memory.max && " +
        "sh -c 'echo $$ > /sys/fs/cgroup/hog/cgroup.procs; exec dd if=/dev/urandom of=/mnt/hog/pages bs=1M count=40 " +
        "2>/dev/null' && md5sum /mnt/hog/pages > /root/pages.md5 && " +
        "awk '/^SwapTotal:/ { t = $2 } /^SwapFree:/ { f = $2 } END { print \"swapped \" int((t - f) / 1024) }' " +
        "/proc/meminfo",
      { timeoutMs: 300_000 },
    );
    assert.equal(setup.code, 0, setup.out);
    const swapped = Number(/swapped (\d+)/.exec(setup.out)?.[1] ?? 0);
    assert.ok(swapped >= 16, `pages in the swap on the LUKS volume: ${swapped} MiB\n${setup.out}`);

    const needles = [...keyHalves(await volumeKey(vm, "/dev/vda")), ...keyHalves(await volumeKey(vm, "/dev/vdc"))];
    const cycle = await fullCycle(vm, needles);
    assert.deepEqual(cycle.hits, needles.map(() => 0), "no key half of the root or the swap's volume while asleep");

    // read back through the swap, now unlocked; a fresh read of every page
    const back = await vm.sh(
      "md5sum -c /root/pages.md5 && dmesg | grep -ciE 'oom-kill|I/O error|swap.*error' || true",
      {
        timeoutMs: 300_000,
      },
    );
    assert.match(back.out, /\/mnt\/hog\/pages: OK/, back.out);
    assert.equal(back.out.trim().split("\n").at(-1), "0", `no OOM kill, no I/O or swap error:\n${back.out}`);
  },
});
