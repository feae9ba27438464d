-- Per-record microbenchmark of the Lua runtime, run inside the binary:
--   lugger lua spec/bench/record_bench.lua [records] [rounds]
-- Prints ns/record for (a) a pass-through script, (b) a script setting 8
-- typed fields and removing body, (c) an nginx parse script like the
-- benchmark's (string.match, 8 fields, body removed, /health 200 dropped),
-- (a) and (b) again in batch mode (bpass, bset8), and, for reference, a
-- naive LuaJIT loop doing the same match on the same lines held in a Lua
-- table (no I/O, no output). BENCH_ONLY=<name> runs one of them.
local batch = require("lugger.batch")
local driver = require("lugger.driver")

local N = tonumber(arg and arg[1]) or 10000
local ROUNDS = tonumber(arg and arg[2]) or 50

local lines = {}
for i = 1, N do
  local path = (i % 10 == 0) and "/health" or ("/api/v1/items/" .. i)
  lines[i] = string.format(
    '10.%d.%d.%d - - [01/May/2024:12:00:%02d +0000] "GET %s HTTP/1.1" 200 %d "-" "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0"',
    i % 256, (i * 7) % 256, (i * 13) % 256, i % 60, path, 100 + i % 5000)
end

local NGINX = '^(%S+) %S+ (%S+) %[([^%]]+)%] "(%S+) (%S+) (%S+)" (%d+) (%d+) "([^"]*)" "([^"]*)"'

local scripts = {
  pass = "function process(rec) end",
  bpass = "function process_batch(batch) for rec in batch:records() do end end",
  bset8 = [[
function process_batch(batch)
  for rec in batch:records() do
    rec.remote_addr = "10.0.0.1"
    rec.method = "GET"
    rec.path = "/api/v1/items"
    rec.protocol = "HTTP/1.1"
    rec.status = 200
    rec.bytes = 1234
    rec.referer = "-"
    rec.agent = "Mozilla/5.0"
    rec.body = nil
  end
end]],
  set8 = [[
function process(rec)
  rec.remote_addr = "10.0.0.1"
  rec.method = "GET"
  rec.path = "/api/v1/items"
  rec.protocol = "HTTP/1.1"
  rec.status = 200
  rec.bytes = 1234
  rec.referer = "-"
  rec.agent = "Mozilla/5.0"
  rec.body = nil
end]],
  nginx = [[
local NGINX = ']] .. NGINX .. [['
function process(rec)
  local ip, user, t, method, path, proto, status, bytes, ref, agent = rec.body:match(NGINX)
  if not ip then return end
  status = tonumber(status)
  if status == 200 and path == "/health" then return false end
  rec.remote_addr = ip
  rec.user = user
  rec.method = method
  rec.path = path
  rec.protocol = proto
  rec.status = status
  rec.bytes = tonumber(bytes)
  rec.agent = agent
  rec.body = nil
end]],
}

local ffi = require("ffi")
local C = ffi.C

-- Refills a batch with the lines, as the reader would (memory is kept
-- across resets, as in the collector, so page faults do not count).
local function refill(b)
  C.lg_ffi_batch_reset(b)
  for i = 1, N do
    C.lg_ffi_batch_add(b, lines[i], #lines[i], 0, 0, 0, 0, 1)
  end
end

local function bench_script(name)
  local rt = driver.new({ output_names = { "out" } })
  assert(rt.add_pipeline(0, name, { { path = name .. ".lua", src = scripts[name] } }))
  local b = batch.new(lines)
  rt.run(0, b) -- warm up the JIT and the batch's memory
  local dt = 0
  for _ = 1, ROUNDS do
    refill(b)
    local t0 = os.clock()
    local failed = rt.run(0, b)
    dt = dt + os.clock() - t0
    assert(failed == 0)
  end
  batch.destroy(b)
  return dt * 1e9 / (N * ROUNDS)
end

local function bench_naive()
  local sink = 0
  local t0 = os.clock()
  for _ = 1, ROUNDS do
    for i = 1, N do
      local ip, user, _, method, path, proto, status, bytes, _, agent = lines[i]:match(NGINX)
      status = tonumber(status)
      if not (status == 200 and path == "/health") then
        local rec = { remote_addr = ip, user = user, method = method, path = path,
                      protocol = proto, status = status, bytes = tonumber(bytes), agent = agent }
        sink = sink + #rec.path
      end
    end
  end
  return (os.clock() - t0) * 1e9 / (N * ROUNDS), sink
end

print(string.format("records per round: %d, rounds: %d", N, ROUNDS))
local only = os.getenv("BENCH_ONLY")
for _, name in ipairs({ "pass", "set8", "nginx", "bpass", "bset8" }) do
  if not only or only == name then print(string.format("%-6s %8.1f ns/record", name, bench_script(name))) end
end
print(string.format("%-6s %8.1f ns/record (naive LuaJIT match, no I/O)", "naive", (bench_naive())))
