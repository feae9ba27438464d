#!/usr/bin/env node
// Drives cloudwatch_logs_server.js with the official AWS SDK for
// JavaScript (npm @aws-sdk/client-cloudwatch-logs): the SDK signs its
// requests, builds the awsJson1.1 bodies and parses the answers and errors
// the way it does CloudWatch's, so what passes here is the wire format the
// SDK expects. Used by tests/integration/test_cloudwatch_logs.py.
//
// usage: node cloudwatch_sdk_check.js <endpoint> <key> <secret>
// Prints one JSON object with what each step saw; exits 1 on an exception
// that no step expected.
'use strict';
const {
  CloudWatchLogsClient, CreateLogGroupCommand, CreateLogStreamCommand,
  PutRetentionPolicyCommand, PutLogEventsCommand, GetLogEventsCommand,
} = require('@aws-sdk/client-cloudwatch-logs');

const [endpoint, key, secret] = process.argv.slice(2);
const client = new CloudWatchLogsClient({
  endpoint, region: 'us-east-1', maxAttempts: 1,
  credentials: { accessKeyId: key, secretAccessKey: secret },
});

async function errorName(cmd) {
  try {
    await client.send(cmd);
    return null;
  } catch (e) {
    return { name: e.name, message: e.message, status: e.$metadata && e.$metadata.httpStatusCode };
  }
}

(async () => {
  const out = {};
  const g = '/sdk/check', s = 'stream-1';
  const now = Date.now();
  out.putMissingGroup = await errorName(new PutLogEventsCommand({
    logGroupName: g, logStreamName: s, logEvents: [{ timestamp: now, message: 'x' }] }));
  await client.send(new CreateLogGroupCommand({ logGroupName: g }));
  out.createGroupAgain = await errorName(new CreateLogGroupCommand({ logGroupName: g }));
  await client.send(new PutRetentionPolicyCommand({ logGroupName: g, retentionInDays: 7 }));
  out.badRetention = await errorName(new PutRetentionPolicyCommand({ logGroupName: g, retentionInDays: 2 }));
  out.putMissingStream = await errorName(new PutLogEventsCommand({
    logGroupName: g, logStreamName: s, logEvents: [{ timestamp: now, message: 'x' }] }));
  await client.send(new CreateLogStreamCommand({ logGroupName: g, logStreamName: s }));
  const put = await client.send(new PutLogEventsCommand({
    logGroupName: g, logStreamName: s,
    logEvents: [
      { timestamp: now - 20 * 86400000, message: 'too old' },
      { timestamp: now, message: 'first' },
      { timestamp: now + 1, message: 'second' },
      { timestamp: now + 3 * 3600000, message: 'too new' },
    ] }));
  out.rejectedLogEventsInfo = put.rejectedLogEventsInfo || null;
  out.unordered = await errorName(new PutLogEventsCommand({
    logGroupName: g, logStreamName: s,
    logEvents: [{ timestamp: now + 5, message: 'b' }, { timestamp: now, message: 'a' }] }));
  out.span = await errorName(new PutLogEventsCommand({
    logGroupName: g, logStreamName: s,
    logEvents: [{ timestamp: now - 86400000 - 1000, message: 'a' }, { timestamp: now, message: 'b' }] }));
  const big = 'x'.repeat(40000);
  out.tooLarge = await errorName(new PutLogEventsCommand({
    logGroupName: g, logStreamName: s,
    logEvents: Array.from({ length: 27 }, () => ({ timestamp: now, message: big })) }));
  await fetch(endpoint + '/_fake/set', { method: 'POST', body: JSON.stringify({ throttle: 1 }) });
  out.throttled = await errorName(new PutLogEventsCommand({
    logGroupName: g, logStreamName: s, logEvents: [{ timestamp: now + 2, message: 'third' }] }));
  const got = await client.send(new GetLogEventsCommand({ logGroupName: g, logStreamName: s, startFromHead: true }));
  out.events = got.events.map((e) => e.message);
  const bad = new CloudWatchLogsClient({
    endpoint, region: 'us-east-1', maxAttempts: 1,
    credentials: { accessKeyId: key, secretAccessKey: 'wrong' },
  });
  try {
    await bad.send(new CreateLogGroupCommand({ logGroupName: '/sdk/other' }));
    out.badSignature = null;
  } catch (e) {
    out.badSignature = { name: e.name, status: e.$metadata && e.$metadata.httpStatusCode };
  }
  process.stdout.write(JSON.stringify(out) + '\n');
})().catch((e) => {
  process.stderr.write('unexpected: ' + (e.stack || e) + '\n');
  process.exit(1);
});
