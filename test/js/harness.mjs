// Starts and stops the real `plaza serve` for the matrix-js-sdk suite, and
// holds the small helpers the tests share (raw HTTP, SDK clients, waiting).
//
// Each test file starts its own server on a free port with a fresh data
// directory (its own embedded PostgreSQL), so files cannot disturb each other
// and a restart in one file affects nobody else.

import { spawn } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";

import * as sdk from "matrix-js-sdk";
import { logger as sdkGlobalLogger } from "matrix-js-sdk/lib/logger.js";

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, "..", "..");

// PLAZA_BIN names another binary; the Makefile builds bin/plaza first.
const plazaBin = process.env.PLAZA_BIN || path.join(repoRoot, "bin", "plaza");
// PLAZA_JS_VERBOSE=1 copies the server's and the SDK's logs to stderr live.
const verbose = !!process.env.PLAZA_JS_VERBOSE;

const LOG_TAIL_LINES = 80;
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 30_000;

// The SDK's warnings and errors, kept for the failure report rather than
// printed: a restart makes it log failed syncs, on purpose.
const sdkProblems = [];

// What the SDK reports but is normal here: its RTC session manager sees a
// new room's state before the room is stored (with any server), and it
// names each default push rule of its own version that the server's set
// lacks (deprecated ones included), for every client.
const sdkNoise = /Got room state event for unknown room|default global \w+ push rule/;

function recordSdkProblem(line) {
  if (sdkNoise.test(line)) return;
  sdkProblems.push(line.split("\n")[0]);
  if (sdkProblems.length > 200) sdkProblems.splice(0, 100);
}

// Parts of the SDK log through its process-wide logger (loglevel) and its
// children, which copy the parent's method factory when created: route them
// the same way as the clients' own loggers.
{
  const sdkFactory = sdkGlobalLogger.methodFactory;
  sdkGlobalLogger.methodFactory = (methodName, level, loggerName) => {
    const print = sdkFactory(methodName, level, loggerName);
    return function (...args) {
      if (verbose) return print.apply(this, args);
      if (methodName === "warn" || methodName === "error") {
        recordSdkProblem(`${new Date().toISOString()} [sdk ${this?.prefix ?? "global"}] ${methodName}: ${args.map(String).join(" ")}`);
      }
    };
  };
  sdkGlobalLogger.setLevel(verbose ? "debug" : "warn"); // also rebuilds the methods
}

export const PASSWORD = "correct horse battery staple";

async function freePort() {
  const srv = net.createServer();
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  const { port } = srv.address();
  srv.close();
  await once(srv, "close");
  return port;
}

/**
 * A `plaza serve` process and the data directory it owns. `restart()` stops it
 * and starts it again on the same port and data directory, so clients keep
 * their base URL and tokens.
 */
export class Plaza {
  constructor({ port, dataDir }) {
    this.port = port;
    this.dataDir = dataDir;
    this.serverName = "plaza.test";
    this.baseUrl = `http://127.0.0.1:${port}`;
    this.proc = null;
    this.exited = null;
    this.logLines = [];
    this.generation = 0;
  }

  static async start() {
    // PostgreSQL runs as an unprivileged user when we are root: every
    // directory above the data directory must be enterable by it, which a
    // mkdtemp directory (0700) is not.
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "plaza-js-"));
    fs.chmodSync(dataDir, 0o755);
    const plaza = new Plaza({ port: await freePort(), dataDir });
    await plaza.#spawn();
    return plaza;
  }

  #log(line) {
    this.logLines.push(line);
    if (this.logLines.length > 2000) this.logLines.splice(0, 1000);
    if (verbose) process.stderr.write(`[plaza] ${line}\n`);
  }

  async #spawn() {
    if (!fs.existsSync(plazaBin)) {
      throw new Error(`${plazaBin} does not exist: run \`go build -o bin/plaza ./cmd/plaza\` (make test does)`);
    }
    this.generation++;
    this.#log(`---- harness: starting plaza (run ${this.generation}) on ${this.baseUrl}, data dir ${this.dataDir} ----`);
    const proc = spawn(plazaBin, ["serve", "--log-format", "text"], {
      env: {
        ...process.env,
        PLAZA_SERVER_NAME: this.serverName,
        PLAZA_LISTEN: `127.0.0.1:${this.port}`,
        PLAZA_PUBLIC_URL: this.baseUrl,
        PLAZA_DATA_DIR: this.dataDir,
        PLAZA_DATABASE_URL: "",
        PLAZA_REGISTRATION: "open",
        PLAZA_RATE_LIMIT: "false",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.proc = proc;
    const run = this.generation;
    this.exited = new Promise((resolve) => {
      proc.on("exit", (code, signal) => {
        const unasked = this.proc === proc ? ", NOT stopped by the harness" : "";
        this.#log(`---- harness: plaza (run ${run}, pid ${proc.pid}) exited: code ${code}, signal ${signal}${unasked} ----`);
        resolve({ code, signal });
      });
    });
    for (const stream of [proc.stdout, proc.stderr]) {
      let partial = "";
      stream.setEncoding("utf8");
      stream.on("data", (chunk) => {
        const lines = (partial + chunk).split("\n");
        partial = lines.pop();
        for (const line of lines) this.#log(line);
      });
      stream.on("end", () => partial && this.#log(partial));
    }
    await this.#waitReady();
  }

  async #waitReady() {
    const deadline = Date.now() + START_TIMEOUT_MS;
    let exit = null;
    this.exited.then((e) => (exit = e));
    let lastError = "";
    while (Date.now() < deadline) {
      if (exit) {
        throw new Error(`plaza exited during start-up (code ${exit.code}, signal ${exit.signal})\n${this.logTail()}`);
      }
      try {
        // Plaza listens before its database is up, so a request may wait in
        // the backlog: bound each attempt.
        const res = await fetch(`${this.baseUrl}/_matrix/client/versions`, { signal: AbortSignal.timeout(2000) });
        if (res.ok) {
          const body = await res.json();
          if (Array.isArray(body.versions) && body.versions.length > 0) return;
          lastError = `unexpected /versions body ${JSON.stringify(body)}`;
        } else {
          lastError = `/versions answered ${res.status}`;
        }
      } catch (err) {
        lastError = String(err?.cause?.code || err?.message || err);
      }
      await sleep(100);
    }
    throw new Error(`plaza was not ready within ${START_TIMEOUT_MS} ms (last: ${lastError})\n${this.logTail()}`);
  }

  /** Stops the server with SIGTERM and checks that it exits cleanly. */
  async stop() {
    if (!this.proc) return;
    const proc = this.proc;
    this.proc = null;
    this.#log(`---- harness: SIGTERM to plaza (run ${this.generation}) ----`);
    proc.kill("SIGTERM");
    const timer = setTimeout(() => {
      this.#log("---- harness: plaza did not stop in time; SIGKILL ----");
      proc.kill("SIGKILL");
    }, STOP_TIMEOUT_MS);
    const { code, signal } = await this.exited;
    clearTimeout(timer);
    if (code !== 0) {
      throw new Error(`plaza exited with code ${code}, signal ${signal} after SIGTERM\n${this.logTail()}`);
    }
  }

  async restart() {
    await this.stop();
    await this.#spawn();
  }

  /** Stops the server and removes its data directory. */
  async destroy({ keepData = false } = {}) {
    try {
      await this.stop();
    } finally {
      if (keepData) {
        process.stderr.write(`plaza data directory kept for inspection: ${this.dataDir}\n`);
      } else {
        fs.rmSync(this.dataDir, { recursive: true, force: true });
      }
    }
  }

  /** The last lines of the server's log, and of the embedded PostgreSQL's. */
  logTail(n = LOG_TAIL_LINES) {
    let out = `---- last ${n} lines of the plaza log ----\n${this.logLines.slice(-n).join("\n")}\n`;
    try {
      const pg = fs.readFileSync(path.join(this.dataDir, "postgres", "server.log"), "utf8").trimEnd().split("\n");
      out += `---- last 15 lines of ${this.dataDir}/postgres/server.log ----\n${pg.slice(-15).join("\n")}\n`;
    } catch {
      // no embedded cluster log (yet): nothing to add
    }
    if (sdkProblems.length > 0) {
      out += `---- last ${Math.min(20, sdkProblems.length)} warnings and errors of the SDK clients ----\n${sdkProblems.slice(-20).join("\n")}\n`;
    }
    return out + "---- end of log ----";
  }

  // ---- raw Client-Server API, for set-up and for what the test checks
  // underneath the SDK ----

  async request(method, urlPath, { token, body, query, timeoutMs = 30_000 } = {}) {
    const url = new URL(urlPath, this.baseUrl);
    for (const [k, v] of Object.entries(query || {})) url.searchParams.set(k, typeof v === "string" ? v : JSON.stringify(v));
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    if (!res.ok) {
      const err = new Error(`${method} ${url.pathname}${url.search} -> ${res.status} ${text}`);
      err.status = res.status;
      err.body = json;
      throw err;
    }
    return json;
  }

  /** Registers a user with a password (m.login.dummy) and returns its credentials. */
  async register(username) {
    const res = await this.request("POST", "/_matrix/client/v3/register", {
      body: { username, password: PASSWORD, auth: { type: "m.login.dummy" }, initial_device_display_name: "harness" },
    });
    return { userId: res.user_id, accessToken: res.access_token, deviceId: res.device_id };
  }

  /**
   * A matrix-js-sdk client for a logged-in user, not yet started. The
   * client's HTTP goes through a tap that keeps every /sync and /messages
   * response it receives (`client.raw`), so tests can check what the server
   * sent, not only what the SDK made of it (the SDK drops events it already
   * has, which would hide a duplicate).
   */
  client({ userId, accessToken, deviceId }) {
    const raw = { syncs: [], messages: [] };
    const fetchFn = async (input, init) => {
      const res = await fetch(input, init);
      const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
      if (res.ok && (url.pathname.endsWith("/sync") || url.pathname.endsWith("/messages"))) {
        const body = await res.clone().json();
        const entry = { query: Object.fromEntries(url.searchParams), body };
        (url.pathname.endsWith("/sync") ? raw.syncs : raw.messages).push(entry);
      }
      return res;
    };
    const client = sdk.createClient({
      baseUrl: this.baseUrl,
      userId,
      accessToken,
      deviceId,
      timelineSupport: true,
      fetchFn,
      logger: sdkLogger(`${userId}/${deviceId}`),
    });
    client.raw = raw;
    client.plaza = this;
    return client;
  }

  /** Logs in through the SDK (m.login.password) and returns a new client for the session. */
  async login(username, { legacy = false } = {}) {
    const anon = sdk.createClient({ baseUrl: this.baseUrl, logger: sdkLogger(`login ${username}`) });
    const res = legacy
      ? await anon.loginWithPassword(username, PASSWORD)
      : await anon.loginRequest({
          type: "m.login.password",
          identifier: { type: "m.id.user", user: username },
          password: PASSWORD,
          initial_device_display_name: "matrix-js-sdk test",
        });
    anon.stopClient();
    return { res, client: this.client({ userId: res.user_id, accessToken: res.access_token, deviceId: res.device_id }) };
  }
}

function sdkLogger(name) {
  const make = (prefix) => {
    const emit = (level) => (...args) => {
      const line = `${new Date().toISOString()} [sdk ${prefix}] ${level}: ${args.map(String).join(" ")}`;
      if (verbose) process.stderr.write(`${line}\n`);
      if (level === "warn" || level === "error") recordSdkProblem(line);
    };
    return {
      trace: emit("trace"),
      debug: emit("debug"),
      info: emit("info"),
      warn: emit("warn"),
      error: emit("error"),
      getChild: (child) => make(`${prefix} ${child}`),
    };
  };
  return make(name);
}

/**
 * Harness workarounds that were needed, by name. Each stands in for a Plaza
 * gap that a dedicated test reports as a failure, so that the gap fails one
 * test instead of every test that starts a client.
 */
export const workaroundsUsed = new Set();

/**
 * The SDK creates its sync filter with POST /user/{userId}/filter, the user
 * ID percent-encoded as clients do. Should Plaza refuse that (403: it
 * compared the still-encoded path parameter with the caller's user ID), the
 * harness creates the filter with the user ID written plainly, which Plaza
 * accepts, and hands the SDK its ID.
 */
function installStartupWorkarounds(client) {
  const createFilter = client.createFilter.bind(client);
  client.createFilter = async (content) => {
    try {
      return await createFilter(content);
    } catch (err) {
      if (err?.httpStatus !== 403) throw err;
      workaroundsUsed.add(
        "POST /_matrix/client/v3/user/<percent-encoded user ID>/filter answered 403: the harness created the filter with the user ID unencoded",
      );
      const userId = client.getUserId();
      const res = await client.plaza.request("POST", `/_matrix/client/v3/user/${userId}/filter`, {
        token: client.getAccessToken(),
        body: content,
      });
      const filter = sdk.Filter.fromJson(userId, res.filter_id, content);
      client.store.storeFilter(filter);
      return filter;
    }
  };
}

/** A sync filter whose timelines are long enough that no test sees `limited`. */
export function longTimelineFilter(client, limit = 500) {
  const filter = new sdk.Filter(client.getUserId());
  filter.setDefinition({ room: { timeline: { limit } } });
  return filter;
}

/** Starts the SDK's sync loop and resolves once the first sync is processed. */
export async function startSyncing(client, opts = {}) {
  installStartupWorkarounds(client);
  const ready = waitFor(client, sdk.ClientEvent.Sync, (state) => state === "PREPARED" || state === "SYNCING", {
    what: `${client.getUserId()} to finish its first sync`,
    failOn: (state, _prev, data) => (state === "ERROR" ? data?.error : undefined),
  });
  await client.startClient({ initialSyncLimit: 20, lazyLoadMembers: false, ...opts });
  await ready;
  return client;
}

// Waits still pending, so a failed test can end them instead of leaving
// listeners and timers behind.
const pendingWaits = new Set();

/**
 * Resolves with the arguments of the first `event` emitted by `emitter` for
 * which `pred` is true; rejects after `timeoutMs`, or when `failOn` returns
 * an error. Start it before the action that causes the event.
 */
export function waitFor(emitter, event, pred = () => true, { timeoutMs = 20_000, what = event, failOn } = {}) {
  let settle;
  const promise = new Promise((resolve, reject) => {
    const timer = setTimeout(() => finish(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
    function finish(err, args) {
      clearTimeout(timer);
      emitter.off(event, listener);
      pendingWaits.delete(settle);
      if (err) reject(err);
      else resolve(args);
    }
    function listener(...args) {
      try {
        const failure = failOn?.(...args);
        if (failure) throw failure instanceof Error ? failure : new Error(String(failure));
        if (pred(...args)) finish(null, args);
      } catch (err) {
        finish(err);
      }
    }
    settle = finish;
    emitter.on(event, listener);
  });
  pendingWaits.add(settle);
  // A test that fails before awaiting this must not turn its later timeout
  // into an unhandled rejection; awaiting it still sees the rejection.
  promise.catch(() => {});
  return promise;
}

/** Ends every wait still pending (for an `after` hook). */
export function cancelWaits() {
  for (const settle of [...pendingWaits]) settle(new Error("cancelled: the test ended"));
}

/** Polls `check` until it returns a truthy value; rejects with `what` after `timeoutMs`. */
export async function eventually(check, { timeoutMs = 20_000, intervalMs = 50, what = "a condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/**
 * Wraps a test body so that a failure carries the server's log tail, which
 * the runner prints with the failure.
 */
export function withServerLog(getPlaza, fn) {
  return async (t) => {
    try {
      await fn(t);
    } catch (err) {
      const plaza = getPlaza();
      if (plaza) {
        const tail = plaza.logTail();
        let attached = false;
        if (err && typeof err === "object") {
          try {
            err.message = `${err.message}\n${tail}`;
            attached = true;
          } catch {
            // a frozen error: print the tail instead
          }
        }
        if (!attached) process.stderr.write(`\n${tail}\n`);
      }
      throw err;
    }
  };
}

/**
 * alice creates a room through the SDK and invites bob, who joins; resolves
 * with the room ID once both clients see bob joined.
 */
export async function createJoinedRoom(alice, bob, name) {
  const { room_id: roomId } = await alice.createRoom({ name, preset: sdk.Preset.PrivateChat, invite: [bob.getUserId()] });
  if (!/^!/.test(roomId)) throw new Error(`createRoom returned ${JSON.stringify(roomId)}, not a room ID`);
  await eventually(() => bob.getRoom(roomId)?.getMyMembership() === "invite", {
    what: `${bob.getUserId()}'s client to see the invite to "${name}"`,
  });
  await bob.joinRoom(roomId);
  await eventually(() => bob.getRoom(roomId)?.getMyMembership() === "join", {
    what: `${bob.getUserId()}'s client to see himself joined`,
  });
  await eventually(() => alice.getRoom(roomId)?.getMember(bob.getUserId())?.membership === "join", {
    what: `${alice.getUserId()}'s client to see ${bob.getUserId()} joined`,
  });
  return roomId;
}

/**
 * Collects the m.room.message events a client's sync loop adds live to a
 * room's timeline, in arrival order (not those from back-pagination).
 */
export function collectLive(client, roomId) {
  const events = [];
  const listener = (event, room, toStartOfTimeline, _removed, data) => {
    if (room?.roomId !== roomId || toStartOfTimeline || data?.liveEvent === false) return;
    if (event.getType() !== sdk.EventType.RoomMessage) return;
    events.push(event);
  };
  client.on(sdk.RoomEvent.Timeline, listener);
  return { events, ids: () => events.map((e) => e.getId()), stop: () => client.off(sdk.RoomEvent.Timeline, listener) };
}

/** A room's timeline section in a raw /sync response, if any. */
export function rawTimeline(body, roomId) {
  return body?.rooms?.join?.[roomId]?.timeline;
}

/** IDs of the m.room.message events in raw /sync responses for a room, in order. */
export function rawMessageIds(syncs, roomId) {
  const ids = [];
  for (const { body } of syncs) {
    for (const ev of rawTimeline(body, roomId)?.events ?? []) if (ev.type === sdk.EventType.RoomMessage) ids.push(ev.event_id);
  }
  return ids;
}

/** The IDs that occur more than once. */
export function duplicates(ids) {
  const seen = new Set();
  const twice = new Set();
  for (const id of ids) (seen.has(id) ? twice : seen).add(id);
  return [...twice];
}

export { sdk };
