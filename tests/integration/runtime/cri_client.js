// A CRI client for the runtime tests: relays calls from the test (one JSON
// object per line on stdin, {"method": "RunPodSandbox", "request": {...}})
// to a CRI runtime's RuntimeService over gRPC on a unix socket, and answers
// each on stdout, in order, with {"response": {...}} or {"error": "..."}.
// The test itself decides what to call, like the kubelet would; this file
// only speaks gRPC, which Python's standard library cannot.
//
// usage: node cri_client.js unix:///path/to/containerd.sock
'use strict';
const path = require('path');
const readline = require('readline');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const endpoint = process.argv[2];
if (!endpoint) {
  process.stderr.write('usage: node cri_client.js unix:///path/to.sock\n');
  process.exit(2);
}
const def = protoLoader.loadSync(path.join(__dirname, 'cri.proto'), {
  keepCase: true, longs: String, enums: String, defaults: true,
});
const runtime = grpc.loadPackageDefinition(def).runtime.v1;
const client = new runtime.RuntimeService(endpoint, grpc.credentials.createInsecure());

function call(method, request) {
  return new Promise((resolve) => {
    if (typeof client[method] !== 'function') {
      resolve({error: 'unknown method ' + method});
      return;
    }
    // A deadline so that a runtime that hangs fails the test instead.
    const deadline = new Date(Date.now() + 60000);
    client[method](request, {deadline}, (err, response) => {
      resolve(err ? {error: method + ': ' + err.message} : {response});
    });
  });
}

// Calls run one at a time, so answers come back in request order.
let chain = Promise.resolve();
const rl = readline.createInterface({input: process.stdin});
rl.on('line', (line) => {
  if (!line.trim()) return;
  chain = chain.then(async () => {
    let msg;
    try {
      msg = JSON.parse(line);
    } catch (e) {
      process.stdout.write(JSON.stringify({error: 'bad request line: ' + e.message}) + '\n');
      return;
    }
    const answer = await call(msg.method, msg.request || {});
    process.stdout.write(JSON.stringify(answer) + '\n');
  });
});
rl.on('close', () => { chain.then(() => { client.close(); }); });
