// Real kernel freezer tests: a throw-away sub-hierarchy of the host's cgroup2 mount plays the cgroup root.
// Needs root and a cgroup2 mount (here /sys/fs/cgroup/unified, hybrid layout).
import assert from "node:assert/strict";
import { resolveCgroup2 } from "./cgroup2.ts";
import { ignore, mount } from "./testing.ts";

Deno.test({
  name: "resolveCgroup2 refuses a directory that is not cgroup2, naming the cgroup2 mount",
  ignore,
  async fn() {
    const err = await resolveCgroup2("/tmp").then(() => null, (e) => e as Error);
    assert.ok(err, "/tmp accepted as cgroup2");
    assert.match(err.message, /not cgroup2/);
    assert.ok(err.message.includes(mount!), err.message);
    const ok = await resolveCgroup2(mount!);
    assert.equal(ok.isRealRoot, true);
  },
});
