/**
 * Death at every step: `cryptsleep suspend` killed with SIGKILL (as a crash or the OOM killer would) just before
 * each phase and each undo of the cycle, and the supervisor killed at its own steps. A test-only switch picks the
 * moment (`CRYPTSLEEP_TEST_DIE_AT`, cycle/runner.ts). After each death: the exit says so (137), every volume is
 * unlocked, nothing is frozen, the sysfs knobs are back; whatever was locked or frozen was undone by the supervisor,
 * with the passphrase typed at its prompt. A crashed run's root mount and cgroup are cleaned by the next run, which
 * ends with the machine exactly as before.
 *
 * CI's tier kills at a few moments (before the hand-over, frozen, locked, asleep, thawing); the full tier at all.
 */
import assert from "node:assert/strict";
import { CONSOLE, FULL_TIER, fullCycle, SLOW, SUPERVISOR_GONE, systemState } from "./cycle_helpers.ts";
import { boot, keyHalves, type VM, volumeKey } from "./harness.ts";
import { imageVolume } from "./disks.ts";
import { AGENT_PHASES, OUTER_PHASES } from "../../cycle/phases.ts";

const ALL = [
  ...OUTER_PHASES.map((p) => p.name),
  ...AGENT_PHASES.map((p) => p.name),
  ...[...AGENT_PHASES, ...OUTER_PHASES].flatMap((p) => p.undo ? [p.undo.name] : []),
];
// `$CRYPTSLEEP_DEATH_POINTS` (comma-separated) picks some, to look at one closely
const POINTS = Deno.env.get("CRYPTSLEEP_DEATH_POINTS")?.split(",") ??
  (FULL_TIER ? ALL : ["supervisor", "freeze", "lock", "sleep", "thaw"]);

/**
 * What must be as before right after a death: no volume locked, no cgroup frozen, the knobs back. (A dead run's
 * own cgroup and root mount may be left, unfrozen: the next run cleans them.)
 */
async function lockState(vm: VM): Promise<string> {
  const lines = (await systemState(vm)).split("\n").slice(0, -1);
  return lines.filter((l) => !/cgroup\.freeze/.test(l) || /=1$/.test(l)).join("\n");
}

/**
 * Drives the cycle until its exit marker: wakes the guest when it sleeps, types the passphrase at each prompt.
 * Returns the exit code and how many prompts were answered.
 */
async function driveUntilExit(
  vm: VM,
  from: number,
  atSupervisorPrompt?: () => Promise<void>,
): Promise<{ code: number; prompts: number }> {
  let answered = from;
  let prompts = 0;
  let sleeps = 0;
  for (const until = Date.now() + 400_000; Date.now() < until;) {
    const text = vm.console.slice(from);
    const exit = /CS-EXIT-(\d+)\r?\n/.exec(text);
    if (exit) return { code: Number(exit[1]), prompts };
    const suspended = vm.eventsSinceClear("SUSPEND").length;
    if (suspended > sleeps) {
      sleeps = suspended;
      await vm.wake();
    }
    const prompt = /Passphrase to unlock \S+/.exec(vm.console.slice(answered));
    if (prompt) {
      answered += prompt.index + prompt[0].length;
      prompts++;
      if (atSupervisorPrompt && /the supervisor unlocks/.test(vm.console.slice(from, answered))) {
        await atSupervisorPrompt();
      }
      await vm.type(vm.guest.passphrase + "\n");
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
  throw new Error(`no exit within 400 s:\n${vm.console.slice(from)}`);
}

async function dieAt(
  vm: VM,
  point: string,
  args = "",
  atSupervisorPrompt?: () => Promise<void>,
): Promise<{ code: number; prompts: number; text: string }> {
  const env = point.startsWith("supervise:") ? "CRYPTSLEEP_TEST_DIE_AT_SUPERVISOR" : "CRYPTSLEEP_TEST_DIE_AT";
  vm.clearEvents();
  const from = vm.cursor = vm.console.length;
  await vm.type(`${env}=${point} cryptsleep suspend ${CONSOLE} ${args}; echo "CS-EXIT-""$?"\n`);
  const r = await driveUntilExit(vm, from, atSupervisorPrompt);
  // the supervisor may still be finishing (unmount, report) after the shell thawed
  const gone = await vm.sh(SUPERVISOR_GONE, { timeoutMs: 120_000 });
  assert.equal(gone.out.trim(), "0", `the supervisor is gone after a death at ${point}`);
  return { ...r, text: vm.console.slice(from) };
}

Deno.test({
  name: `death at every step (${POINTS.length} moments): never frozen without a prompt, nothing left locked`,
  ...SLOW,
  fn: async (t) => {
    await using vm = await boot({});
    const before = await systemState(vm);
    const locks = await lockState(vm);

    for (const point of [...POINTS, "supervise:job", "supervise:ready"]) {
      await t.step(`killed at ${point}`, async () => {
        const r = await dieAt(vm, point);
        if (point === "supervise:job") {
          // before it was ready: the guard stops the cycle before anything is locked
          assert.equal(r.code, 1, r.text);
          assert.match(r.text, /the supervisor \(pid \d+\) exited before it was ready/);
        } else if (point === "supervise:ready") {
          // this process lives on and finishes the cycle, or the guard saw the death first; either way it says so
          const status = await vm.sh("cryptsleep status", { timeoutMs: 120_000 });
          assert.ok(
            (r.code === 0 && /the supervisor exited with an error/.test(status.out)) ||
              (r.code === 1 && /exited after it was ready/.test(r.text)),
            `exit ${r.code}:\n${r.text}\n${status.out}`,
          );
        } else {
          assert.equal(r.code, 137, r.text);
        }
        assert.equal(await lockState(vm), locks, `after a death at ${point}:\n${r.text}`);
      });
    }

    await t.step("the next cycle cleans what the dead ones left and ends with the machine as before", async () => {
      const cycle = await fullCycle(vm, []);
      assert.doesNotMatch(cycle.text, /refused/);
      assert.equal(await systemState(vm), before, cycle.text);
    });
  },
});

/**
 * The steps inside the table swap of a volume whose key is pinned (cycle/pinned/): the hold at the lock, the
 * rebuild at the unlock, and the re-open after it (`--release-at unlock`). The agent dies after each; the
 * supervisor's unlock must find its way from what is left (a frozen filesystem, a wiped key, a placeholder, a
 * loaded but inactive table, a half-rebuilt stack, a helper mapping).
 */
const INSIDE = FULL_TIER
  ? [
    "hold:frozen",
    "hold:wiped",
    "hold:placeholder",
    "hold:reloaded",
    "rebuild:placeholder",
    "rebuild:reloaded",
    "rebuild:resumed",
    "rebuild:removed",
    "reopen:helper",
    "reopen:through",
    "reopen:reloaded",
    "reopen:resumed",
  ]
  : ["hold:reloaded", "rebuild:placeholder"];

Deno.test({
  name: `death inside the table swap (${INSIDE.length} moments): the supervisor unlocks, nothing of the swap is left`,
  ...SLOW,
  fn: async (t) => {
    await using vm = await boot({});
    const pass = vm.guest.passphrase;
    // an image file's volume: cryptsetup's loop device pins its key, so the lock swaps its table (every kernel)
    const setup = await vm.sh(
      `${imageVolume(pass, "/run/img.luks", "img")} && mkfs.ext4 -F -q /dev/mapper/img && ` +
        "mkdir -p /mnt/img && mount /dev/mapper/img /mnt/img && echo start > /mnt/img/log && sync",
      { timeoutMs: 180_000 },
    );
    assert.equal(setup.code, 0, setup.out);
    const before = await systemState(vm);
    const locks = await lockState(vm);
    const imgHalves = keyHalves(await volumeKey(vm, "/run/img.luks"));
    const needles = [...keyHalves(await volumeKey(vm, "/dev/vda")), ...imgHalves];
    // the copies of img's key a live crypt table holds (dm-crypt's and its cipher's)
    const live = await vm.searchRam(imgHalves);

    for (const point of INSIDE) {
      await t.step(`killed at ${point}`, async () => {
        // opened by cryptsetup again, so the key is pinned and the swap (or the re-open) happens at all
        const pinned = await vm.sh(
          `umount /mnt/img && cryptsetup close img && printf %s '${pass}' | cryptsetup open --key-file - ` +
            `/run/img.luks img && mount /dev/mapper/img /mnt/img && echo ${point} >> /mnt/img/log && sync && ` +
            "grep -c 'logon.*cryptsetup:' /proc/keys",
          { timeoutMs: 180_000 },
        );
        assert.equal(pinned.code, 0, pinned.out);
        // killed while it held img's key in its own memory, which the kernel frees unzeroed: the supervisor zeroes
        // it before its prompt (before anything could sleep again); only the placeholder's live table holds it
        let atPrompt: number[] | null = null;
        const r = await dieAt(
          vm,
          point,
          point.startsWith("reopen:") ? "--release-at unlock" : "",
          point === "rebuild:placeholder" ? async () => void (atPrompt = await vm.searchRam(imgHalves)) : undefined,
        );
        if (point === "rebuild:placeholder") {
          assert.deepEqual(atPrompt, live, `img's key halves at the supervisor's prompt vs a live table's\n${r.text}`);
        }
        assert.equal(r.code, 137, r.text);
        assert.equal(await lockState(vm), locks, `after a death at ${point}:\n${r.text}`);
        const after = await vm.sh(
          "dmsetup ls | grep -c '^cryptsleep-'; dmsetup table img | cut -d' ' -f3; " +
            // a filesystem left frozen would hang this write: the timeout makes that a failure, not a hang
            `timeout 60 sh -c 'echo after-${point} >> /mnt/img/log && sync' && echo written; ` +
            "echo 3 > /proc/sys/vm/drop_caches; cat /mnt/img/log",
          { timeoutMs: 120_000 },
        );
        const [helpers, target, written, ...log] = after.out.trim().split("\n");
        assert.equal(helpers, "0", `no placeholder or helper mapping left:\n${after.out}\n${r.text}`);
        assert.equal(target, "crypt", `img is a crypt mapping again:\n${after.out}`);
        assert.equal(written, "written", `img's filesystem takes writes:\n${after.out}\n${r.text}`);
        assert.deepEqual(log.slice(-2), [point, `after-${point}`], `img's data:\n${after.out}`);
      });
    }

    await t.step("the next cycle is clean and ends with the machine as before", async () => {
      const cycle = await fullCycle(vm, needles);
      assert.deepEqual(cycle.hits, needles.map(() => 0), cycle.text);
      assert.equal(await systemState(vm), before, cycle.text);
    });
  },
});
