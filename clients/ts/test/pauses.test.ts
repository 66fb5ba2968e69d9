/** Timed pauses against the live server: a queue's or a group's pause with the time it lifts by itself. */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { InvalidArgumentError, type QueueManager } from "../src/index.js";
import { client, queueName } from "./helpers.js";

let qm: QueueManager;

before(() => {
  qm = client();
});

after(async () => {
  await qm.shutdown();
});

const HOUR = 3_600_000;

describe("timed pauses", () => {
  it("pauses a queue until a time, shows it, and clears it on resume or a plain pause", async () => {
    const name = queueName("timed");
    await qm.registerQueue(name);
    const before = Date.now();
    const paused = await qm.pauseQueue(name, { resumeAfterMs: HOUR });
    assert.equal(paused.paused, true);
    const until = paused.pausedUntil!.getTime();
    assert.ok(until >= before + HOUR - 5_000 && until <= Date.now() + HOUR + 5_000, String(paused.pausedUntil));
    assert.equal((await qm.getQueue(name)).pausedUntil!.getTime(), until);

    const at = new Date(Math.ceil((Date.now() + 2 * HOUR) / 1000) * 1000);
    assert.equal((await qm.pauseQueue(name, { resumeAt: at })).pausedUntil!.getTime(), at.getTime());
    const plain = await qm.pauseQueue(name);
    assert.equal(plain.paused, true);
    assert.equal(plain.pausedUntil, undefined);
    await qm.pauseQueue(name, { resumeAfterMs: HOUR });
    const resumed = await qm.resumeQueue(name);
    assert.equal(resumed.paused, false);
    assert.equal("pausedUntil" in resumed, false);
  });

  it("pauses a group until a time", async () => {
    const name = queueName("timed-group");
    await qm.registerQueue(name);
    const group = await qm.pauseGroup(name, "acme", { resumeAfterMs: HOUR });
    assert.equal(group.paused, true);
    assert.ok(group.pausedUntil instanceof Date);
    assert.deepEqual((await qm.listGroups(name)).items[0]!.pausedUntil, group.pausedUntil);
    assert.equal((await qm.resumeGroup(name, "acme")).pausedUntil, undefined);
  });

  it("shows a timed pause and a maintenance window in the queue's metrics", async () => {
    const name = queueName("timed-metrics");
    await qm.registerQueue(name);
    const paused = await qm.pauseQueue(name, { resumeAfterMs: HOUR });
    const metrics = await qm.getQueueMetrics(name);
    assert.equal(metrics.isPaused, true);
    assert.equal(metrics.pausedUntil!.getTime(), paused.pausedUntil!.getTime());
    assert.equal(metrics.maintenanceUntil, undefined);
    await qm.resumeQueue(name);
    assert.equal((await qm.getQueueMetrics(name)).pausedUntil, undefined);

    const now = new Date();
    const held = queueName("window-metrics");
    const inside = await qm.registerQueue(held, {
      maintenanceWindows: [{ cron: `${now.getUTCMinutes()} ${now.getUTCHours()} * * *`, durationMs: HOUR }],
    });
    const windowed = (await qm.getAllMetrics()).find((m) => m.queueName === held)!;
    assert.equal(windowed.isPaused, true);
    assert.equal(windowed.maintenanceUntil!.getTime(), inside.maintenanceUntil!.getTime());
    assert.equal(windowed.pausedUntil, undefined);
  });

  it("refuses bad times: both, zero, in the past, too far", async () => {
    const name = queueName("timed-bad");
    await qm.registerQueue(name);
    await assert.rejects(
      qm.pauseQueue(name, { resumeAfterMs: 1_000, resumeAt: new Date(Date.now() + HOUR) }),
      /^RangeError: give resumeAfterMs or resumeAt, not both$/,
    );
    await assert.rejects(qm.pauseQueue(name, { resumeAfterMs: 0 }), /^RangeError: resumeAfterMs must be more than 0 ms/);
    await assert.rejects(qm.pauseGroup(name, "g", { resumeAfterMs: -1 }), RangeError);
    const past = await qm.pauseQueue(name, { resumeAt: new Date(Date.now() - HOUR) }).catch((e: unknown) => e);
    assert.ok(past instanceof InvalidArgumentError, String(past));
    assert.match(past.message, /resume_at: .* is not in the future/);
    const far = await qm.pauseQueue(name, { resumeAfterMs: 367 * 24 * HOUR }).catch((e: unknown) => e);
    assert.ok(far instanceof InvalidArgumentError, String(far));
    assert.match(far.message, /366-day maximum/);
    assert.equal((await qm.getQueue(name)).paused, false);
  });

  it("registers maintenance windows, reads them back, and holds a queue registered inside one", async () => {
    const name = queueName("windows");
    const windows = [{ cron: "0 2 * * SUN", durationMs: 2 * HOUR, timezone: "Europe/Paris" }, { cron: "30 3 1 * *", durationMs: 900_000 }];
    const queue = await qm.registerQueue(name, { maintenanceWindows: windows });
    assert.deepEqual(queue.config.maintenanceWindows, [windows[0], { ...windows[1], timezone: "" }]);
    assert.ok(queue.nextMaintenanceTime instanceof Date && queue.nextMaintenanceTime.getTime() > Date.now());
    assert.equal(queue.maintenanceUntil, undefined);

    const now = new Date();
    const inside = await qm.registerQueue(`${name}-now`, {
      maintenanceWindows: [{ cron: `${now.getUTCMinutes()} ${now.getUTCHours()} * * *`, durationMs: HOUR }],
    });
    assert.equal(inside.paused, true);
    assert.ok(inside.maintenanceUntil!.getTime() > Date.now(), String(inside.maintenanceUntil));
    // A resume ends only a hand pause: the window still holds the queue.
    assert.equal((await qm.resumeQueue(`${name}-now`)).paused, true);
    assert.equal((await qm.registerQueue(`${name}-now`)).paused, false);

    const bad = await qm.registerQueue(name, { maintenanceWindows: [{ cron: "0 25 * * *", durationMs: HOUR }] }).catch((e: unknown) => e);
    assert.ok(bad instanceof InvalidArgumentError, String(bad));
    assert.match(bad.message, /config\.maintenance_windows\[0\]\.cron/);
    await assert.rejects(qm.registerQueue(name, { maintenanceWindows: [{ cron: "0 2 * * *", durationMs: 0 }] }), RangeError);
  });

  it("gives a group its own maintenance windows, holds it inside one, and lists when it ends", async () => {
    const name = queueName("group-windows");
    await qm.registerQueue(name);
    const now = new Date();
    const started = { cron: `${now.getUTCMinutes()} ${now.getUTCHours()} * * *`, durationMs: HOUR };
    const group = await qm.setGroupLimits(name, "acme", { concurrency: 2 }, [started]);
    assert.equal(group.paused, true);
    assert.deepEqual(group.maintenanceWindows, [{ ...started, timezone: "" }]);
    assert.ok(group.maintenanceUntil!.getTime() > Date.now(), String(group.maintenanceUntil));
    const listed = (await qm.listGroups(name)).items[0]!;
    assert.deepEqual(listed.maintenanceUntil, group.maintenanceUntil);
    assert.deepEqual(listed.nextMaintenanceTime, group.nextMaintenanceTime);
    // A resume ends only a hand pause: the window still holds the group.
    assert.equal((await qm.resumeGroup(name, "acme")).paused, true);
    const freed = await qm.setGroupLimits(name, "acme", { concurrency: 2 });
    assert.equal(freed.paused, false);
    assert.equal(freed.maintenanceUntil, undefined);
    assert.equal(freed.maintenanceWindows, undefined);

    const bad = await qm.setGroupLimits(name, "acme", {}, [{ cron: "0 25 * * *", durationMs: HOUR }]).catch((e: unknown) => e);
    assert.ok(bad instanceof InvalidArgumentError, String(bad));
    assert.match(bad.message, /limits\.maintenance_windows\[0\]\.cron/);
    await assert.rejects(qm.setGroupLimits(name, "acme", {}, [{ cron: "0 2 * * *", durationMs: 0 }]), RangeError);
  });
});
