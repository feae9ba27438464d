#!/usr/bin/env node
// A test HTTP server that checks the AWS SigV4 signature of every request
// it receives with an independent signer (npm aws4), for lugger's tests.
//
// usage: node sigv4_verify.js --region R --service S --key AKID --secret SK
//          [--token T] [--forward http://127.0.0.1:PORT]
// Prints "PORT n" once listening on 127.0.0.1 (an ephemeral port). For
// each request: re-signs method, target (path and query as received), the
// headers named in SignedHeaders, and the body (or its declared
// x-amz-content-sha256) with aws4, using the credentials and scope given
// here (not the ones the request claims), and compares the Authorization
// header. A mismatch answers 403 {"error": "SignatureDoesNotMatch", ...}
// and is counted; a match answers 200 {"ok": true, "target": ...}, or,
// with --forward, is passed on to that server (e.g. s3rver, which does not
// check signatures) and its answer relayed. --lose-answers N: the first N
// forwarded PUTs reach the server, but their answer is replaced by a 500
// (an answer lost after the write: the client must retry). --fail-part N:
// the Nth UploadPart is answered 500 without being passed on. GET /__sigv4
// answers the counts, with multipart ones: uploads created, completed and
// aborted, and the most UploadParts passed on at once. For the output conformance suite: POST /_fake/faults
// {"down": 503} answers that status to every request until {"down": null};
// {"hold": N}: the next N PutObjects (signature checked) are neither passed
// on nor answered, a request in flight for as long as its client waits
// (counted in `held`); {"delay": {"puts": N, "ms": M}}: the next N
// PutObjects are passed on at once, and the server's answer is relayed M ms
// after it came (the object is written, the client not told yet; counted in
// `delayed` once the server answered);
// GET /_fake/records (with --forward) answers the lines of every object of
// --bucket in the server, gunzipped when gzip, in key order.
// --bucket-region R: the buckets are in region R, and a request signed for
// another region (its Authorization's credential scope) is answered as S3
// answers it, before any signature check (Amazon S3 API reference, "Error
// responses": the error's XML body, Content-Type application/xml):
// --wrong-region 301 (the default): the request reached another region's
// endpoint, which is what lugger's default endpoint for a wrong `region`
// is: 301 PermanentRedirect, the bucket's endpoint in <Endpoint> and its
// region in the x-amz-bucket-region header, no Location header (elements
// in the order of an answer S3 gave, <Endpoint> last: past the first 300
// bytes, which is all of a body lugger quotes in a reason);
// --wrong-region 400: the bucket's own endpoint (an `endpoint` set, the
// scope wrong): 400 AuthorizationHeaderMalformed, the region expected in
// the message and in <Region>. Counted in wrongRegion by S3 operation.
'use strict';
const http = require('http');
const { check } = require('./sigv4_check');

const args = {};
for (let i = 2; i < process.argv.length; i += 2)
  args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
const creds = { accessKeyId: args.key, secretAccessKey: args.secret };
if (args.token) creds.sessionToken = args.token;
const counts = { ok: 0, bad: 0, failures: [], lost: [], created: 0,
  completed: 0, aborted: 0, maxParts: 0, wrongRegion: {}, held: 0,
  delayed: 0 };
let loseAnswers = Number(args['lose-answers'] || 0);
let failPart = Number(args['fail-part'] || 0);
let partsNow = 0;
let down = null;
let holdPuts = 0;
let delayPuts = 0;
let delayMs = 0;

// GET from the forward server (unsigned: s3rver takes anonymous requests).
function fetchRaw(path) {
  const u = new URL(args.forward);
  return new Promise((resolve, reject) => {
    http.get({ host: u.hostname, port: u.port, path }, (r) => {
      const c = [];
      r.on('data', (d) => c.push(d));
      r.on('end', () => resolve(Buffer.concat(c)));
    }).on('error', reject);
  });
}

async function records() {
  const bucket = args.bucket || 'logs';
  const list = (await fetchRaw('/' + bucket + '?list-type=2&max-keys=1000')).toString();
  const keys = [...list.matchAll(/<Key>([^<]*)<\/Key>/g)].map((m) => m[1].replace(/&amp;/g, '&')).sort();
  let out = '';
  for (const k of keys) {
    let b = await fetchRaw('/' + bucket + '/' + k.split('/').map(encodeURIComponent).join('/'));
    if (b[0] === 0x1f && b[1] === 0x8b) b = require('zlib').gunzipSync(b);
    out += b.toString();
  }
  return out;
}

// S3's answer to a request signed for a region other than the bucket's
// (--bucket-region), or null.
function wrongRegion(req) {
  const want = args['bucket-region'];
  const m = /Credential=[^/,]+\/\d{8}\/([^/,]+)\//.exec(req.headers['authorization'] || '');
  if (!want || !m || m[1] === want) return null;
  const bucket = decodeURIComponent(req.url.split('?')[0].split('/')[1] || '');
  const id = require('crypto').randomBytes(8).toString('hex').toUpperCase();
  const hostId = require('crypto').randomBytes(56).toString('base64');
  const xml = (inner) => '<?xml version="1.0" encoding="UTF-8"?>\n<Error>' + inner + '</Error>';
  const headers = { 'content-type': 'application/xml', 'x-amz-request-id': id,
    'x-amz-id-2': hostId, server: 'AmazonS3' };
  if ((args['wrong-region'] || '301') === '400') {
    return { status: 400, headers, body: xml('<Code>AuthorizationHeaderMalformed</Code>' +
      "<Message>The authorization header is malformed; the region '" + m[1] +
      "' is wrong; expecting '" + want + "'</Message><Region>" + want + '</Region>' +
      '<RequestId>' + id + '</RequestId><HostId>' + hostId + '</HostId>') };
  }
  headers['x-amz-bucket-region'] = want;
  return { status: 301, headers, body: xml('<Code>PermanentRedirect</Code>' +
    '<Message>The bucket you are attempting to access must be addressed using the ' +
    'specified endpoint. Please send all future requests to this endpoint.</Message>' +
    '<RequestId>' + id + '</RequestId><Bucket>' + bucket + '</Bucket><HostId>' + hostId +
    '</HostId><Endpoint>' + bucket + '.s3.' + want + '.amazonaws.com</Endpoint>') };
}

function verify(req, body) {
  return check(req, body, { service: args.service, region: args.region, creds });
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    if (req.url === '/_fake/faults' && req.method === 'POST') {
      const f = JSON.parse(body.toString());
      if ('down' in f || !('hold' in f)) down = f.down;
      if ('hold' in f) holdPuts = Number(f.hold);
      if ('delay' in f) {
        delayPuts = Number(f.delay.puts);
        delayMs = Number(f.delay.ms);
      }
      res.writeHead(200);
      return res.end('{}');
    }
    if (req.url === '/_fake/records' && req.method === 'GET') {
      return records().then((t) => { res.writeHead(200); res.end(t); },
        (e) => { res.writeHead(500); res.end(String(e)); });
    }
    if (down) {
      res.writeHead(down, { 'content-type': 'application/xml' });
      return res.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>ServiceUnavailable</Code><Message>down (test)</Message></Error>');
    }
    if (req.method === 'GET' && req.url === '/__sigv4') {
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify(counts));
    }
    const wr = wrongRegion(req);
    if (wr) {
      const op = req.method === 'PUT' ? (/[?&]partNumber=/.test(req.url) ? 'UploadPart' : 'PutObject')
        : req.method === 'POST' ? (/[?&]uploads/.test(req.url) ? 'CreateMultipartUpload'
          : 'CompleteMultipartUpload')
          : req.method === 'DELETE' ? 'AbortMultipartUpload' : req.method;
      counts.wrongRegion[op] = (counts.wrongRegion[op] || 0) + 1;
      res.writeHead(wr.status, wr.headers);
      return res.end(wr.body);
    }
    const why = verify(req, body);
    if (why) {
      counts.bad++;
      counts.failures.push(req.method + ' ' + req.url + ': ' + why);
      process.stderr.write('sigv4_verify: ' + req.method + ' ' + req.url + ': ' + why + '\n');
      res.writeHead(403, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ __type: 'SignatureDoesNotMatch', error: 'SignatureDoesNotMatch', message: why }));
    }
    counts.ok++;
    if (!args.forward) {
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ ok: true, target: req.url, bytes: body.length }));
    }
    const u = new URL(args.forward);
    const h = Object.assign({}, req.headers);
    h.host = u.host;
    // Checked here; s3rver knows only its own keys, and takes requests
    // without Authorization as anonymous.
    delete h.authorization;
    delete h['x-amz-security-token'];
    const lose = req.method === 'PUT' && loseAnswers > 0 && loseAnswers--;
    const part = req.method === 'PUT' && /[?&]partNumber=/.test(req.url);
    if (req.method === 'PUT' && !part && holdPuts > 0) {
      holdPuts--;
      counts.held++;
      return; /* never answered: the client's request stays in flight */
    }
    const delay = req.method === 'PUT' && !part && delayPuts > 0 && delayPuts-- && delayMs;
    if (part && failPart > 0 && --failPart === 0) {
      res.writeHead(500, { 'content-type': 'application/xml' });
      return res.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>part failed on purpose (test)</Message></Error>');
    }
    if (req.method === 'POST' && /[?&]uploads=/.test(req.url)) counts.created++;
    if (req.method === 'POST' && /[?&]uploadId=/.test(req.url)) counts.completed++;
    if (req.method === 'DELETE' && /[?&]uploadId=/.test(req.url)) counts.aborted++;
    if (part) {
      partsNow++;
      counts.maxParts = Math.max(counts.maxParts, partsNow);
      res.on('finish', () => { partsNow--; });
    }
    const p = http.request({ host: u.hostname, port: u.port, method: req.method, path: req.url, headers: h }, (pr) => {
      if (lose) {
        pr.resume();
        pr.on('end', () => {
          counts.lost.push(req.url);
          res.writeHead(500, { 'content-type': 'application/xml' });
          res.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>answer lost on purpose (test)</Message></Error>');
        });
        return;
      }
      if (delay) {
        const c = [];
        pr.on('data', (d) => c.push(d));
        pr.on('end', () => {
          counts.delayed++;
          setTimeout(() => { res.writeHead(pr.statusCode, pr.headers); res.end(Buffer.concat(c)); }, delay);
        });
        return;
      }
      res.writeHead(pr.statusCode, pr.headers);
      pr.pipe(res);
    });
    p.on('error', (e) => { res.writeHead(502); res.end(String(e)); });
    p.end(body);
  });
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write('PORT ' + server.address().port + '\n');
});
