#!/usr/bin/env node
// A stand-in for Amazon CloudWatch Logs, for lugger's tests (no CloudWatch
// emulator can be installed here). Written from the CloudWatch Logs API
// Reference (PutLogEvents, CreateLogGroup, CreateLogStream,
// PutRetentionPolicy, GetLogEvents, Common Errors) and the AWS JSON 1.1
// protocol: POST / with X-Amz-Target: Logs_20140328.<Operation> and
// Content-Type application/x-amz-json-1.1; answers 200 with a JSON body,
// errors as HTTP 400 (500 for ServiceUnavailableException) with
// {"__type": "<Name>", "message": "..."}. tests/integration/aws/
// cloudwatch_sdk_check.js drives it with the official AWS SDK for
// JavaScript to show the SDK parses its answers as CloudWatch's.
//
// Every request's SigV4 signature (service "logs") is checked with the
// independent signer npm aws4 (sigv4_check.js) against the credentials
// given here; a bad one is answered 403 InvalidSignatureException.
//
// PutLogEvents enforces: 1 to 10,000 events; the batch at most 1,048,576
// bytes counting each message's UTF-8 bytes plus 26; an event at most
// --max-event-size (default 262144) bytes the same way; a message of at
// least 1 byte and a timestamp; chronological order; at most 24 hours
// between the first and last valid event (each InvalidParameterException);
// the group and the stream exist (ResourceNotFoundException). Events more
// than 14 days old (tooOldLogEventEndIndex), older than the group's
// retention (expiredLogEventEndIndex) or more than 2 hours in the future
// (tooNewLogEventStartIndex) are not stored and named in
// rejectedLogEventsInfo with a 200, as the current API reference says.
//
// usage: node cloudwatch_logs_server.js --key AKID --secret SK
//          [--token T] [--region us-east-1] [--port P] [--state FILE]
//          [--max-event-size N] [--discard 1] [--any-age 1]
// Prints "PORT <n>" once listening on 127.0.0.1. With --state, every
// change (groups, streams, retention, stored events) is appended to FILE
// before the answer is sent and replayed at start, so a restarted server
// (even after kill -9) still has what it acknowledged. --discard 1: events
// are checked and counted but not kept (benchmarks); --any-age 1: as
// {"reject_old": false} below.
//
// Test endpoints (not CloudWatch's; unsigned): GET /__sigv4 (signature
// counts), GET /_fake/dump (every group, its retention and streams with
// their events), GET /_fake/records (every stored message, one a line),
// GET /_fake/calls (operation counts; stored: events taken; maxEvents,
// maxBytes, maxSpan: the most events, bytes (counted as above) and ms
// between first and last event of one PutLogEvents; throttled:
// ThrottlingExceptions sent), POST /_fake/faults {"down": 503 |
// null} (answer every call with that status), POST /_fake/set
// {"throttle": N} (the next N PutLogEvents get ThrottlingException),
// {"reject_old": false} (take events of any age: the conformance suite's
// records are from 1970), {"deny": ["CreateLogGroup", ...]} (those
// operations answer AccessDeniedException, as for a role without them).
'use strict';
const fs = require('fs');
const http = require('http');
const { check } = require('./sigv4_check');

const args = { region: 'us-east-1', port: '0', 'max-event-size': '262144' };
for (let i = 2; i < process.argv.length; i += 2)
  args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
const creds = { accessKeyId: args.key, secretAccessKey: args.secret };
if (args.token) creds.sessionToken = args.token;

const MAX_BATCH_BYTES = 1048576;
const EVENT_OVERHEAD = 26;
const MAX_EVENTS = 10000;
const DAY = 24 * 3600 * 1000;
const RETENTION = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545,
  731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];

const groups = new Map(); // name -> {created, retentionInDays, streams: Map}
const sig = { ok: 0, bad: 0, failures: [] };
const calls = {};
let down = null;
let throttle = 0;
let rejectOld = args['any-age'] !== '1';
let stored = 0; // events taken (also with --discard)
let deny = [];
let seq = 0;

class ApiError extends Error {
  constructor(type, message, status) {
    super(message);
    this.type = type;
    this.status = status || 400;
  }
}
const invalid = (m) => new ApiError('InvalidParameterException', m);

// ---- state: in memory, appended to --state and replayed at start --------

function apply(op) {
  if (op.op === 'group') {
    groups.set(op.name, { created: op.at, retentionInDays: null, streams: new Map() });
  } else if (op.op === 'retention') {
    groups.get(op.name).retentionInDays = op.days;
  } else if (op.op === 'stream') {
    groups.get(op.group).streams.set(op.name, { created: op.at, events: [] });
  } else if (op.op === 'events') {
    const st = groups.get(op.group).streams.get(op.stream);
    for (const e of op.events) st.events.push(e);
    seq = Math.max(seq, op.seq);
  }
}

function commit(op) {
  if (args.state) fs.appendFileSync(args.state, JSON.stringify(op) + '\n');
  apply(op);
}

if (args.state && fs.existsSync(args.state)) {
  for (const line of fs.readFileSync(args.state, 'utf8').split('\n')) {
    if (!line) continue;
    try {
      apply(JSON.parse(line));
    } catch (e) {
      // A line cut by kill -9 in the middle of its write: never answered.
    }
  }
}

// ---- the operations ------------------------------------------------------

function needString(b, k, re, max) {
  const v = b[k];
  if (typeof v !== 'string' || v.length < 1 || Buffer.byteLength(v) > max)
    throw invalid('1 validation error detected: Value at \'' + k +
      '\' failed to satisfy constraint: Member must have length between 1 and ' + max);
  if (re && !re.test(v))
    throw invalid('1 validation error detected: Value \'' + v + '\' at \'' + k +
      '\' failed to satisfy constraint: Member must satisfy regular expression pattern: ' + re.source);
  return v;
}
const GROUP_RE = /^[.\-_/#A-Za-z0-9]+$/;
const STREAM_RE = /^[^:*]*$/;

function group(b) {
  const name = needString(b, 'logGroupName', GROUP_RE, 512);
  const g = groups.get(name);
  if (!g) throw new ApiError('ResourceNotFoundException', 'The specified log group does not exist.');
  return g;
}

const ops = {
  CreateLogGroup(b) {
    const name = needString(b, 'logGroupName', GROUP_RE, 512);
    if (groups.has(name))
      throw new ApiError('ResourceAlreadyExistsException', 'The specified log group already exists');
    commit({ op: 'group', name, at: Date.now() });
    return {};
  },
  PutRetentionPolicy(b) {
    group(b);
    if (!RETENTION.includes(b.retentionInDays))
      throw invalid('1 validation error detected: Value \'' + b.retentionInDays +
        '\' at \'retentionInDays\' failed to satisfy constraint: Member must satisfy enum value set: [' +
        RETENTION.join(', ') + ']');
    commit({ op: 'retention', name: b.logGroupName, days: b.retentionInDays });
    return {};
  },
  CreateLogStream(b) {
    const g = group(b);
    const name = needString(b, 'logStreamName', STREAM_RE, 512);
    if (g.streams.has(name))
      throw new ApiError('ResourceAlreadyExistsException', 'The specified log stream already exists');
    commit({ op: 'stream', group: b.logGroupName, name, at: Date.now() });
    return {};
  },
  PutLogEvents(b) {
    const g = group(b);
    needString(b, 'logStreamName', STREAM_RE, 512);
    const evs = b.logEvents;
    if (!Array.isArray(evs) || evs.length < 1 || evs.length > MAX_EVENTS)
      throw invalid('1 validation error detected: Value at \'logEvents\' failed to satisfy constraint: ' +
        'Member must have length less than or equal to 10000 and greater than or equal to 1');
    let total = 0;
    for (let i = 0; i < evs.length; i++) {
      const e = evs[i];
      if (typeof e !== 'object' || !Number.isInteger(e.timestamp) || typeof e.message !== 'string')
        throw invalid('Log event ' + i + ' needs a timestamp (long) and a message (string)');
      const n = Buffer.byteLength(e.message, 'utf8');
      if (n < 1)
        throw invalid('1 validation error detected: Value at \'logEvents.' + (i + 1) +
          '.member.message\' failed to satisfy constraint: Member must have length greater than or equal to 1');
      if (n + EVENT_OVERHEAD > Number(args['max-event-size']))
        throw invalid('Log event too large: ' + (n + EVENT_OVERHEAD) + ' bytes exceeds limit of ' + args['max-event-size']);
      total += n + EVENT_OVERHEAD;
      if (i > 0 && e.timestamp < evs[i - 1].timestamp)
        throw invalid('Log events in a single PutLogEvents request must be in chronological order.');
    }
    calls.maxEvents = Math.max(calls.maxEvents || 0, evs.length);
    calls.maxBytes = Math.max(calls.maxBytes || 0, total);
    calls.maxSpan = Math.max(calls.maxSpan || 0, evs[evs.length - 1].timestamp - evs[0].timestamp);
    if (total > MAX_BATCH_BYTES)
      throw invalid('Upload too large: ' + total + ' bytes exceeds limit of ' + MAX_BATCH_BYTES);
    if (throttle > 0) {
      throttle--;
      calls.throttled = (calls.throttled || 0) + 1;
      throw new ApiError('ThrottlingException', 'Rate exceeded');
    }
    const st = g.streams.get(b.logStreamName);
    if (!st) throw new ApiError('ResourceNotFoundException', 'The specified log stream does not exist.');
    const now = Date.now();
    // Chronological, so the old ones are a prefix and the new ones a suffix.
    let tooOld = 0, expired = 0, tooNew = evs.length;
    if (rejectOld) {
      while (tooOld < evs.length && evs[tooOld].timestamp < now - 14 * DAY) tooOld++;
      if (g.retentionInDays)
        while (expired < evs.length && evs[expired].timestamp < now - g.retentionInDays * DAY) expired++;
      while (tooNew > 0 && evs[tooNew - 1].timestamp > now + 2 * 3600 * 1000) tooNew--;
    }
    const first = Math.max(tooOld, expired);
    const valid = evs.slice(first, Math.max(first, tooNew));
    if (valid.length && valid[valid.length - 1].timestamp - valid[0].timestamp > DAY)
      throw invalid('The batch of log events in a single PutLogEvents request cannot span more than 24 hours.');
    stored += valid.length;
    if (valid.length && args.discard === '1') {
      seq++;
    } else if (valid.length) {
      seq++;
      commit({
        op: 'events', group: b.logGroupName, stream: b.logStreamName, seq,
        events: valid.map((e) => ({ timestamp: e.timestamp, message: e.message, ingestionTime: now })),
      });
    }
    const out = { nextSequenceToken: String(seq).padStart(56, '0') };
    const info = {};
    if (tooOld > 0) info.tooOldLogEventEndIndex = tooOld;
    if (expired > tooOld) info.expiredLogEventEndIndex = expired;
    if (tooNew < evs.length) info.tooNewLogEventStartIndex = tooNew;
    if (Object.keys(info).length) out.rejectedLogEventsInfo = info;
    return out;
  },
  // Events sorted by time (stably: the order stored within a millisecond),
  // from the head; nextForwardToken "f/<index>".
  GetLogEvents(b) {
    const g = group(b);
    const st = g.streams.get(b.logStreamName);
    if (!st) throw new ApiError('ResourceNotFoundException', 'The specified log stream does not exist.');
    const sorted = sortedEvents(st);
    const limit = Math.min(b.limit || 10000, 10000);
    let from = 0;
    if (b.nextToken) {
      const m = /^f\/(\d+)$/.exec(b.nextToken);
      if (!m) throw invalid('The specified nextToken is not valid.');
      from = Number(m[1]);
    }
    const events = sorted.slice(from, from + limit);
    return {
      events,
      nextForwardToken: 'f/' + (from + events.length),
      nextBackwardToken: 'b/' + from,
    };
  },
};

function sortedEvents(st) {
  return st.events.map((e, i) => [e, i])
    .sort((a, b) => a[0].timestamp - b[0].timestamp || a[1] - b[1])
    .map((x) => x[0]);
}

function dump() {
  const out = {};
  for (const [gn, g] of groups) {
    const streams = {};
    for (const [sn, st] of g.streams) streams[sn] = sortedEvents(st);
    out[gn] = { retentionInDays: g.retentionInDays, streams };
  }
  return out;
}

// ---- HTTP ----------------------------------------------------------------

function send(res, status, obj, type) {
  const h = { 'content-type': 'application/x-amz-json-1.1', 'x-amzn-requestid': 'req-' + Date.now() };
  if (type) h['x-amzn-errortype'] = type;
  res.writeHead(status, h);
  res.end(JSON.stringify(obj));
}

function testEndpoint(req, res, body) {
  const u = req.url;
  if (req.method === 'GET' && u === '/__sigv4') return send(res, 200, sig);
  if (req.method === 'GET' && u === '/_fake/dump') return send(res, 200, dump());
  if (req.method === 'GET' && u === '/_fake/calls') return send(res, 200, Object.assign({ stored }, calls));
  if (req.method === 'GET' && u === '/_fake/records') {
    let t = '';
    for (const g of groups.values())
      for (const st of g.streams.values())
        for (const e of sortedEvents(st)) t += e.message + '\n';
    res.writeHead(200, { 'content-type': 'text/plain' });
    return res.end(t);
  }
  if (req.method === 'POST' && u === '/_fake/faults') {
    down = JSON.parse(body.toString()).down;
    return send(res, 200, {});
  }
  if (req.method === 'POST' && u === '/_fake/set') {
    const s = JSON.parse(body.toString());
    if ('throttle' in s) throttle = s.throttle;
    if ('reject_old' in s) rejectOld = s.reject_old;
    if ('deny' in s) deny = s.deny;
    return send(res, 200, {});
  }
  return false;
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    if (req.url.startsWith('/_fake/') || req.url === '/__sigv4') {
      if (testEndpoint(req, res, body) === false) send(res, 404, {});
      return;
    }
    if (down) return send(res, down, { __type: 'ServiceUnavailableException', message: 'down (test)' }, 'ServiceUnavailableException');
    const why = check(req, body, { service: 'logs', region: args.region, creds });
    if (why) {
      sig.bad++;
      sig.failures.push(req.method + ' ' + req.url + ': ' + why);
      process.stderr.write('cloudwatch_logs_server: ' + why + '\n');
      return send(res, 403, { __type: 'InvalidSignatureException', message: why }, 'InvalidSignatureException');
    }
    sig.ok++;
    const target = req.headers['x-amz-target'] || '';
    const m = /^Logs_20140328\.(\w+)$/.exec(target);
    const op = m && ops[m[1]];
    if (req.method !== 'POST' || req.url !== '/' || !op)
      return send(res, 400, { __type: 'UnknownOperationException', message: 'unknown operation ' + target });
    if (!/^application\/x-amz-json-1\.1/.test(req.headers['content-type'] || ''))
      return send(res, 400, { __type: 'SerializationException', message: 'Content-Type must be application/x-amz-json-1.1' });
    calls[m[1]] = (calls[m[1]] || 0) + 1;
    if (deny.includes(m[1]))
      return send(res, 400, { __type: 'AccessDeniedException', message: 'User: arn:aws:sts::111122223333:assumed-role/test is not authorized to perform: logs:' + m[1] }, 'AccessDeniedException');
    let b;
    try {
      b = JSON.parse(body.toString('utf8'));
    } catch (e) {
      return send(res, 400, { __type: 'SerializationException', message: String(e) });
    }
    try {
      send(res, 200, op(b));
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      send(res, e.status, { __type: e.type, message: e.message }, e.type);
    }
  });
});
server.keepAliveTimeout = 30000;
server.listen(Number(args.port), '127.0.0.1', () => {
  process.stdout.write('PORT ' + server.address().port + '\n');
});
