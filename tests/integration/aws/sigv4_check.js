// The SigV4 check shared by the AWS test servers (sigv4_verify.js for S3,
// cloudwatch_logs_server.js): re-signs a received request with the
// independent signer npm aws4, using the credentials and scope the test
// server was given (not the ones the request claims), and compares the
// Authorization header.
'use strict';
const crypto = require('crypto');
const aws4 = require('aws4');

// check(req, body, {service, region, creds: {accessKeyId, secretAccessKey,
// sessionToken?}}) -> null when the signature is right, else why not.
// `req` is a Node http.IncomingMessage, `body` the Buffer received.
function check(req, body, opt) {
  const { service, region, creds } = opt;
  const auth = req.headers['authorization'] || '';
  const m = /^AWS4-HMAC-SHA256 Credential=([^,]+), SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$/.exec(auth);
  if (!m) return 'malformed or missing Authorization: ' + auth;
  const signed = m[2].split(';');
  if (!signed.includes('host') || !signed.includes('x-amz-date'))
    return 'host and x-amz-date must be signed';
  if (service === 's3' && !signed.includes('x-amz-content-sha256'))
    return 'x-amz-content-sha256 must be signed for s3';
  const date = req.headers['x-amz-date'] || '';
  const t = Date.parse(date.replace(/^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z$/, '$1-$2-$3T$4:$5:$6Z'));
  if (!(Math.abs(Date.now() - t) < 15 * 60 * 1000)) return 'x-amz-date too far from now: ' + date;
  const headers = {};
  for (const h of signed) {
    if (req.headers[h] === undefined) return 'signed header not sent: ' + h;
    headers[h] = req.headers[h];
  }
  if (creds.sessionToken && headers['x-amz-security-token'] !== creds.sessionToken)
    return 'session token missing or not signed';
  const sha = req.headers['x-amz-content-sha256'];
  if (sha && sha !== 'UNSIGNED-PAYLOAD' &&
      sha !== crypto.createHash('sha256').update(body).digest('hex'))
    return 'x-amz-content-sha256 does not match the body';
  const signer = new aws4.RequestSigner({
    method: req.method, host: req.headers.host, path: req.url, headers,
    body, service, region, doNotModifyHeaders: true,
  }, creds);
  // With doNotModifyHeaders aws4 would take the time of the string to sign
  // from its own clock, not from the x-amz-date header it signs.
  signer.datetime = date;
  const expected = signer.sign().headers.Authorization;
  if (expected !== auth)
    return 'signature mismatch: expected ' + expected + ' got ' + auth +
      '; canonical request (aws4): ' + JSON.stringify(signer.canonicalString());
  return null;
}

module.exports = { check };
