#!/usr/bin/env node
// Reference measurement for `cargo xtask compare`: graphile-worker draining
// no-op jobs from a local PostgreSQL.
//
// One run: create a fresh database, install graphile-worker's schema, queue
// JOBS no-op jobs with `addJobs` (bulk insert), then start a worker pool at
// CONCURRENCY and time from `run()` until the last job has been deleted from
// the queue. The database is dropped afterwards. Prints one JSON line on
// stdout; everything else goes to stderr.
//
//   node drain.js [--jobs 20000] [--concurrency 10] [--host 127.0.0.1]
//                 [--port 5432] [--user postgres]
//
// Loopback only: the host must be a loopback address.

"use strict";

const { execFileSync } = require("node:child_process");
const { performance } = require("node:perf_hooks");
const { Logger, makeWorkerUtils, run } = require("graphile-worker");

function args() {
  const out = {
    jobs: 20000,
    concurrency: 10,
    host: "127.0.0.1",
    port: 5432,
    user: "postgres",
  };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    if (!(key in out) || argv[i + 1] === undefined) {
      throw new Error(`unknown or incomplete option ${argv[i]}`);
    }
    out[key] = typeof out[key] === "number" ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (!["127.0.0.1", "localhost", "::1"].includes(out.host)) {
    throw new Error(`--host must be a loopback address, not ${out.host}`);
  }
  return out;
}

// Warnings and errors only: graphile-worker logs every completed job at
// info level, which would measure the terminal rather than the queue.
const quietLogger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") {
    console.error(`graphile-worker ${level}: ${message}`);
  }
});

function pg(tool, opts, db) {
  execFileSync(tool, ["-h", opts.host, "-p", String(opts.port), "-U", opts.user, db], {
    stdio: ["ignore", "ignore", "inherit"],
  });
}

async function drain(opts, connectionString) {
  const utils = await makeWorkerUtils({ connectionString, logger: quietLogger });
  let pgVersion;
  try {
    await utils.migrate();
    pgVersion = await utils.withPgClient(async (c) => (await c.query("show server_version")).rows[0].server_version);
    const chunk = 1000;
    for (let i = 0; i < opts.jobs; i += chunk) {
      const specs = [];
      for (let j = i; j < Math.min(i + chunk, opts.jobs); j++) {
        specs.push({ identifier: "noop", payload: {} });
      }
      await utils.addJobs(specs);
    }
    const queued = await utils.withPgClient(
      async (c) => (await c.query("select count(*)::int as n from graphile_worker._private_jobs")).rows[0].n,
    );
    if (queued !== opts.jobs) {
      throw new Error(`queued ${queued} jobs, expected ${opts.jobs}`);
    }

    let succeeded = 0;
    let failed = 0;
    let allSucceeded;
    const done = new Promise((resolve) => {
      allSucceeded = resolve;
    });
    const started = performance.now();
    const runner = await run({
      connectionString,
      concurrency: opts.concurrency,
      noHandleSignals: true,
      logger: quietLogger,
      crontab: "",
      taskList: {
        noop: async () => {},
      },
    });
    runner.events.on("job:success", () => {
      succeeded += 1;
      if (succeeded === opts.jobs) allSucceeded();
    });
    runner.events.on("job:failed", () => {
      failed += 1;
    });
    await done;
    // A job's success is reported before its row is deleted: the queue is
    // empty once the last deletion has committed.
    for (;;) {
      const left = await utils.withPgClient(
        async (c) => (await c.query("select count(*)::int as n from graphile_worker._private_jobs")).rows[0].n,
      );
      if (left === 0) break;
      await new Promise((r) => setTimeout(r, 2));
    }
    const seconds = (performance.now() - started) / 1000;
    await runner.stop();
    return { seconds, succeeded, failed, pgVersion };
  } finally {
    await utils.release();
  }
}

async function main() {
  const opts = args();
  const db = `testfleet_ref_graphile_${process.pid}_${Date.now()}`;
  const connectionString = `postgres://${opts.user}@${opts.host}:${opts.port}/${db}`;
  pg("createdb", opts, db);
  let result;
  try {
    result = await drain(opts, connectionString);
  } finally {
    pg("dropdb", opts, db);
  }
  const version = require("graphile-worker/package.json").version;
  console.log(
    JSON.stringify({
      reference: "graphile-worker",
      version,
      postgres: result.pgVersion,
      jobs: opts.jobs,
      concurrency: opts.concurrency,
      succeeded: result.succeeded,
      failed: result.failed,
      seconds: Math.round(result.seconds * 1000) / 1000,
      jobs_per_second: Math.round((opts.jobs / result.seconds) * 10) / 10,
    }),
  );
}

main().catch((e) => {
  console.error(`drain.js: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
