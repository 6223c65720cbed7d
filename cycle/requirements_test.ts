// Doctor and preflight judge the shared requirements the same way: on every recorded tree, for each uid,
// sleep state and libcryptsetup probe, a requirement preflight refuses on is a doctor fail, and the reverse.
import assert from "node:assert/strict";
import { type Check, doctorExitCode, runChecks } from "../cli/doctor.ts";
import { ExitCode } from "../cli/exit_codes.ts";
import { discover, type Plan } from "../discovery/mod.ts";
import { probeLibcryptsetup } from "../ffi/libcryptsetup.ts";
import { buildTree } from "../tests/fixtures/trees/build.ts";
import { requirementsFor } from "./preflight.ts";
import {
  checkLibcryptsetup,
  type LibProbe,
  refusals,
  REQUIRED_SYMBOLS,
  REQUIREMENTS,
  type SleepState,
} from "./requirements.ts";

const TREES = [
  "luks-root",
  "no-dm",
  "lvm-on-luks",
  "luks-on-lvm",
  "two-disks",
  "detached-header",
  "plain-dm-crypt",
  "lv-spanning",
];

function libs(): LibProbe[] {
  const real = probeLibcryptsetup();
  assert.ok(real.ok, real.ok ? "" : real.error);
  const old = { ...real.info, version: "2.0", symbols: { ...real.info.symbols, crypt_safe_alloc: false } };
  return [real, { ok: true, info: old }, { ok: false, error: "cannot load libcryptsetup.so.12: not found" }];
}

async function agree(root: string, plan: Plan, uid: number, state: SleepState, lib: LibProbe): Promise<number> {
  const verdicts = await requirementsFor({ state }, lib, plan, { root, uid });
  const checks = await runChecks({ root, uid, state, lib });
  assert.deepEqual(verdicts.map((v) => v.name), [...REQUIREMENTS]);
  for (const v of verdicts) {
    const line = checks.find((c: Check) => c.name === v.name);
    const what = `${root} uid ${uid} ${state} ${lib.ok ? lib.info.version : "no lib"}: ${v.name}`;
    assert.ok(line, `doctor has no ${v.name} line (${what})`);
    assert.notEqual(v.status, "unknown", what);
    assert.equal(line.status === "fail", v.status === "fail", `${what}: doctor ${line.status}, preflight ${v.status}`);
    if (v.status === "fail") assert.ok(line.hint && v.fix && line.hint === v.fix, `${what}: no fix`);
  }
  const reasons = refusals(verdicts);
  if (reasons.length) assert.equal(doctorExitCode(checks), ExitCode.ENV, reasons.join("; "));
  return reasons.length;
}

Deno.test("doctor fails exactly where preflight refuses, on every recorded tree", async () => {
  let refused = 0;
  let passed = 0;
  for (const name of TREES) {
    await using tree = await buildTree(name);
    const plan = await discover({ root: tree.root, uid: 0 });
    for (const uid of [0, 1000]) {
      for (const state of ["mem", "freeze"] as const) {
        for (const lib of libs()) {
          if (await agree(tree.root, plan, uid, state, lib)) refused++;
          else passed++;
        }
      }
    }
  }
  // both verdicts occur: the trees include a ready machine and a sandbox that can't suspend
  assert.ok(refused > 0 && passed > 0, `${refused} refused, ${passed} passed`);
});

Deno.test("requirements: too little RAM, no MemAvailable, the hybrid cgroup layout all refuse in both", async () => {
  await using tree = await buildTree("luks-root");
  const plan = await discover({ root: tree.root, uid: 0 });
  const [lib] = libs();
  assert.equal(await agree(tree.root, plan, 0, "mem", lib), 0);
  await Deno.writeTextFile(`${tree.root}/proc/meminfo`, "MemTotal: 200000 kB\nMemAvailable: 100000 kB\n");
  assert.equal(await agree(tree.root, plan, 0, "mem", lib), 1);
  await Deno.writeTextFile(`${tree.root}/proc/meminfo`, "MemTotal: 200000 kB\n");
  assert.equal(await agree(tree.root, plan, 0, "mem", lib), 1);
  await Deno.writeTextFile(`${tree.root}/proc/meminfo`, "MemAvailable: 7000000 kB\n");
  await Deno.writeTextFile(
    `${tree.root}/proc/self/mountinfo`,
    "22 1 253:0 / / rw - ext4 /dev/mapper/cryptroot rw\n30 22 0:27 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n" +
      "40 30 0:37 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
  );
  const verdicts = await requirementsFor({ state: "mem" }, lib, plan, { root: tree.root, uid: 0 });
  const [reason] = refusals(verdicts);
  assert.match(
    reason,
    /\/sys\/fs\/cgroup is tmpfs, not cgroup2 \(cgroup2 is at \/sys\/fs\/cgroup\/unified.*unified_cgroup/,
  );
  assert.equal(await agree(tree.root, plan, 0, "mem", lib), 1);
});

Deno.test("requirements: pm_test left at a test level refuses in both; absent or none passes", async () => {
  await using tree = await buildTree("luks-root");
  const plan = await discover({ root: tree.root, uid: 0 });
  const [lib] = libs();
  await Deno.mkdir(`${tree.root}/sys/power`, { recursive: true });
  await Deno.writeTextFile(`${tree.root}/sys/power/pm_test`, "[none] core processors platform devices freezer\n");
  assert.equal(await agree(tree.root, plan, 0, "mem", lib), 0);
  await Deno.writeTextFile(`${tree.root}/sys/power/pm_test`, "none core processors platform devices [freezer]\n");
  assert.equal(await agree(tree.root, plan, 0, "mem", lib), 1);
  const [reason] = refusals(await requirementsFor({ state: "mem" }, lib, plan, { root: tree.root, uid: 0 }));
  assert.match(reason, /pm_test is freezer: every suspend stops .*: echo none > \/sys\/power\/pm_test/);
});

Deno.test("requirements: the ffi probe lists every required symbol; one missing fails, naming the version", () => {
  const [real] = libs();
  assert.ok(real.ok);
  assert.deepEqual(REQUIRED_SYMBOLS.filter((s) => real.info.symbols[s] === undefined), []);
  assert.equal(checkLibcryptsetup(real).status, "ok");
  const v = checkLibcryptsetup({
    ok: true,
    info: { ...real.info, symbols: { ...real.info.symbols, crypt_safe_free: false } },
  });
  assert.equal(v.status, "fail");
  assert.match(`${v.seen}: ${v.fix}`, /needs crypt_safe_free: install libcryptsetup >= 2\.3/);
});

Deno.test("requirements: a layout the cycle would hang on refuses in both, naming each volume; doctor says it once", async () => {
  await using tree = await buildTree("detached-header");
  const plan = await discover({ root: tree.root, uid: 0 });
  const [lib] = libs();
  const verdicts = await requirementsFor({ state: "mem" }, lib, plan, { root: tree.root, uid: 0 });
  const layout = verdicts.find((v) => v.name === "layout")!;
  assert.equal(layout.status, "fail");
  for (const u of plan.unsafe) assert.ok(layout.seen.includes(u), `${u} is in: ${layout.seen}`);
  const refused = refusals(verdicts).find((r) => r.startsWith("volume "));
  for (const name of ["selfish", "pd", "rel"]) assert.match(refused ?? "", new RegExp(`volume ${name}: `));
  const checks = await runChecks({ root: tree.root, uid: 0, state: "mem", lib });
  assert.equal(checks.filter((c) => plan.unsafe.some((u) => c.detail.includes(u))).length, 1, "one doctor line");
  // a layout without any: the requirement passes
  await using plain = await buildTree("luks-root");
  const ok = await requirementsFor({ state: "mem" }, lib, await discover({ root: plain.root, uid: 0 }), {
    root: plain.root,
    uid: 0,
  });
  assert.equal(ok.find((v) => v.name === "layout")!.status, "ok");
});
