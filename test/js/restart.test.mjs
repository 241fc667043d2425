// The server restarts while people talk: a client that was away resumes from
// the sync token it saved and gets exactly what it missed, and a client that
// kept running across the restart carries on from its own token.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  Plaza,
  cancelWaits,
  collectLive,
  createJoinedRoom,
  duplicates,
  eventually,
  longTimelineFilter,
  rawMessageIds,
  rawTimeline,
  sdk,
  startSyncing,
  workaroundsUsed,
} from "./harness.mjs";

const { MsgType, EventType } = sdk;

let plaza;
const clients = [];

describe("Plaza restarts mid-conversation", () => {
  before(async () => {
    plaza = await Plaza.start();
  });

  after(async () => {
    cancelWaits();
    for (const c of clients) c.stopClient();
    if (workaroundsUsed.size > 0) {
      process.stderr.write(`harness workarounds used in restart.test.mjs:\n  - ${[...workaroundsUsed].join("\n  - ")}\n`);
    }
    await plaza?.destroy();
  });

  test(
    "6. bob stops, the server restarts, bob resumes from his saved sync token: no loss, no duplicates",
    { timeout: 60_000 },
    async () => {
      try {
        await run();
      } catch (err) {
        err.message = `${err.message}\n${plaza.logTail()}`;
        throw err;
      }
    },
  );
});

async function run() {
  await plaza.register("alice");
  await plaza.register("bob");
  const alice = (await plaza.login("alice")).client;
  const bob = (await plaza.login("bob")).client;
  clients.push(alice, bob);
  await startSyncing(alice, { filter: longTimelineFilter(alice) });
  await startSyncing(bob, { filter: longTimelineFilter(bob) });
  const roomId = await createJoinedRoom(alice, bob, "restart");

  const send = async (body) => (await alice.sendMessage(roomId, { msgtype: MsgType.Text, body })).event_id;

  // Phase 1: both online.
  const live = collectLive(bob, roomId);
  const early = [];
  for (let i = 0; i < 20; i++) early.push(await send(`early ${i}`));
  await eventually(() => live.events.length >= early.length, {
    what: `bob's client to receive the first ${early.length} messages (has ${live.events.length})`,
  });
  live.stop();
  assert.deepEqual(live.ids(), early, "bob received the early messages in order, once each");

  // bob goes away, keeping the token of the last sync his client processed.
  bob.stopClient();
  const savedToken = bob.store.getSyncToken();
  assert.ok(savedToken, "the SDK kept a sync token");
  assert.ok(
    bob.raw.syncs.some(({ body }) => body.next_batch === savedToken),
    "the SDK's token is a next_batch the server gave it",
  );

  // Phase 2: alice talks while bob is away; then the server restarts on the
  // same data directory and port; then alice talks some more.
  const away = [];
  for (let i = 0; i < 10; i++) away.push(await send(`while bob is away ${i}`));

  const aliceSyncsBefore = alice.raw.syncs.length;
  await plaza.restart();
  // alice's SDK client was syncing across the restart: it must reconnect on
  // its own, with its own token.
  await eventually(() => alice.raw.syncs.length > aliceSyncsBefore && alice.getSyncState() === "SYNCING", {
    timeoutMs: 30_000,
    what: "alice's client to sync again after the restart",
  });

  const afterRestart = [];
  for (let i = 0; i < 10; i++) afterRestart.push(await send(`after the restart ${i}`));
  const missed = [...away, ...afterRestart];

  // Phase 3: bob resumes from the saved token, over plain /sync, with a
  // timeline limit high enough that nothing may be left out as `limited`.
  const token = bob.getAccessToken();
  const filter = { room: { timeline: { limit: 100 } } };
  const resumed = [];
  let since = savedToken;
  const deadline = Date.now() + 20_000;
  while (resumed.length < missed.length) {
    assert.ok(Date.now() < deadline, `resumed sync got ${resumed.length} of ${missed.length} missed messages within 20 s`);
    const body = await plaza.request("GET", "/_matrix/client/v3/sync", {
      token,
      query: { since, timeout: "2000", filter },
    });
    const tl = rawTimeline(body, roomId);
    assert.notEqual(tl?.limited, true, "the resumed sync is not limited");
    resumed.push(...rawMessageIds([{ body }], roomId));
    assert.ok(body.next_batch, "every /sync response has next_batch");
    since = body.next_batch;
  }
  // One more round: nothing further may come.
  const tail = await plaza.request("GET", "/_matrix/client/v3/sync", {
    token,
    query: { since, timeout: "1000", filter },
  });
  resumed.push(...rawMessageIds([{ body: tail }], roomId));

  const earlySet = new Set(early);
  assert.deepEqual(resumed.filter((id) => earlySet.has(id)), [], "nothing bob had already received came again");
  assert.deepEqual(resumed, missed, "bob got exactly the messages sent while he was away, in order");

  // alice's client, which synced straight through the restart, saw each of
  // the 40 messages exactly once from the server.
  const all = [...early, ...missed];
  await eventually(() => rawMessageIds(alice.raw.syncs, roomId).length >= all.length, {
    what: "alice's client to receive her own messages back",
  });
  const aliceIds = rawMessageIds(alice.raw.syncs, roomId);
  assert.deepEqual(duplicates(aliceIds), [], "alice's syncs across the restart carried no message twice");
  assert.deepEqual(aliceIds, all, "alice's syncs carried every message in order");
  const timeline = alice
    .getRoom(roomId)
    .getLiveTimeline()
    .getEvents()
    .filter((e) => e.getType() === EventType.RoomMessage)
    .map((e) => e.getId());
  assert.deepEqual(timeline, all, "alice's timeline after the restart is the whole conversation, once");
}
