// Third-party Fluent forward peers for lugger's interop tests, driven from
// Python. Options come as one JSON argument.
//
//   node fwd_peers.js client '{"port":..,"mode":"PackedForward","n":100,
//        "key":"k","tls":"ca.pem","tag":"t","ackTimeout":10000}'
//     @fluent-org/logger FluentClient with acks: sends n events
//     {"log":"<mode> <i>","i":i} with EventTime, prints
//     {"acked":n,"ms":...} once every emit resolved, exits 1 on an error.
//   node fwd_peers.js fluent-logger '{"port":..,"mode":"Message","n":10,"key":"k"}'
//     fluent-logger (requireAckResponse) doing the same.
//   node fwd_peers.js server '{"port":..,"key":"k","cert":..,"certKey":..}'
//     @fluent-org/logger FluentServer: one JSON line per event on stdout
//     ({"tag","time":[sec,nsec]|sec,"rec"}), "listening" on stderr.
"use strict";
const fs = require("fs");

const [cmd, json] = process.argv.slice(2);
const o = JSON.parse(json || "{}");

// A client that gives up (e.g. refused by the handshake) leaves its
// promises pending and node exits quietly: that is a failure here.
let finished = cmd === "server";
process.on("beforeExit", () => { if (!finished) fail("exited before every event was acked"); });

function fail(e) {
  console.error("error: " + (e && e.stack ? e.stack : e));
  process.exit(1);
}

async function client() {
  const { FluentClient, EventTime } = require("@fluent-org/logger");
  const opts = {
    eventMode: o.mode || "PackedForward",
    socket: { host: "127.0.0.1", port: o.port, timeout: 30000 },
    ack: { ackTimeout: o.ackTimeout || 20000 },
  };
  if (o.key)
    opts.security = { clientHostname: o.hostname || "npm-client", sharedKey: o.key,
                      username: o.user || "", password: o.password || "" };
  if (o.tls)
    opts.socket.tls = { ca: fs.readFileSync(o.tls), servername: "localhost" };
  const c = new FluentClient(o.tag || "npm", opts);
  const t0 = Date.now();
  const p = [];
  for (let i = 0; i < o.n; i++)
    p.push(c.emit(o.label || "x", { log: `${opts.eventMode} ${i}`, i }, EventTime.now()));
  await Promise.all(p);
  finished = true;
  console.log(JSON.stringify({ acked: o.n, ms: Date.now() - t0 }));
  await c.disconnect();
}

function fluentLogger() {
  const logger = require("fluent-logger");
  const opts = {
    host: "127.0.0.1", port: o.port, timeout: 30, reconnectInterval: 500,
    requireAckResponse: true, ackResponseTimeout: o.ackTimeout || 20000,
    eventMode: o.mode || "Message",
    internalLogger: { info() {}, error: (...a) => console.error(...a) },
  };
  if (o.key) opts.security = { clientHostname: o.hostname || "npm-logger", sharedKey: o.key,
                               username: "", password: "" };
  const s = logger.createFluentSender(o.tag || "fl", opts);
  let done = 0;
  const t0 = Date.now();
  s.on("error", fail);
  for (let i = 0; i < o.n; i++) {
    s.emit(o.label || "y", { message: `fluent-logger ${opts.eventMode} ${i}`, i }, logger.EventTime.now(), (err) => {
      if (err) fail(err);
      if (++done === o.n) {
        finished = true;
        console.log(JSON.stringify({ acked: o.n, ms: Date.now() - t0 }));
        s.end();
      }
    });
  }
}

async function server() {
  const { FluentServer } = require("@fluent-org/logger");
  const opts = { listenOptions: { host: "127.0.0.1", port: o.port } };
  if (o.key)
    opts.security = { serverHostname: o.hostname || "npm-server", sharedKey: o.key,
                      authorize: !!o.users, userDict: o.users || {} };
  if (o.cert)
    opts.tlsOptions = { cert: fs.readFileSync(o.cert), key: fs.readFileSync(o.certKey) };
  const s = new FluentServer(opts);
  s.on("entry", (tag, time, rec) => {
    const t = typeof time === "number" ? time : [time.epoch, time.nano];
    process.stdout.write(JSON.stringify({ tag, time: t, rec }) + "\n");
  });
  await s.listen();
  console.error("listening");
}

({ client, "fluent-logger": fluentLogger, server })[cmd]
  ? Promise.resolve(({ client, "fluent-logger": fluentLogger, server })[cmd]()).catch(fail)
  : fail("unknown command " + cmd);
