-- Shared helpers for the specs: build batches through lg_ffi_batch_*, run
-- scripts through the real driver, and read records back as their JSON
-- output lines.
local bit = require("bit")
local ffi = require("ffi")
local batch = require("lugger.batch")
local driver = require("lugger.driver")
local json = require("lugger.json")

local H = {}
local counter = 0

H.outputs = { "default", "errors", "audit" }

-- A runtime with pipeline 0 made of `scripts`: a source string, or a list
-- of source strings or {src=, path=, params=}. Returns rt, ok, err, paths.
function H.runtime(scripts, opts)
  opts = opts or {}
  local rt = driver.new({
    output_names = opts.outputs or H.outputs,
    dynamic_routes = opts.dynamic,
    log_errors = false,
  })
  if type(scripts) == "string" then scripts = { scripts } end
  local list, paths = {}, {}
  for k, s in ipairs(scripts) do
    if type(s) == "string" then s = { src = s } end
    counter = counter + 1
    list[k] = {
      path = s.path or ("spec_script_" .. counter .. ".lua"),
      src = s.src,
      params = s.params,
      compat = s.compat,
      call = s.call,
      compat_opts = s.compat_opts,
    }
    paths[k] = list[k].path
  end
  local ok, err = rt.add_pipeline(0, "spec", list)
  return rt, ok, err, paths
end

-- Runs `scripts` over a new batch of `recs` (see lugger.batch.new).
-- Returns the batch, the number of failed records, the runtime, the paths.
function H.run(scripts, recs, opts)
  local rt, ok, err, paths = H.runtime(scripts, opts)
  assert(ok, err)
  local b = batch.new(recs, opts and opts.batch)
  local failed = rt.run(0, b)
  return b, failed, rt, paths
end

-- Record i (0-based) as its JSON output line, decoded.
function H.out(b, i)
  local line = batch.encode(b, i)
  local v, err = json.decode(line)
  assert(v, err)
  return v, line
end

function H.line(b, i)
  return batch.encode(b, i)
end

local function has(b, i, flag)
  return bit.band(b.recs[i].flags, flag) ~= 0
end

function H.dropped(b, i) return has(b, i, batch.DROPPED) end
function H.failed(b, i) return has(b, i, batch.FAILED) end
function H.routed(b, i) return has(b, i, batch.ROUTED) end

-- The routes of record i as a list of output indexes.
function H.routes(b, i)
  local r, out = b.recs[i].routes, {}
  for k = 0, 63 do
    if bit.band(r, bit.lshift(1ULL, k)) ~= 0ULL then out[#out + 1] = k end
  end
  return out
end

-- The error text of a failed record.
function H.error(b, i)
  local r = b.recs[i]
  return ffi.string(b.data + r.err_off, r.err_len)
end

H.batch = batch
H.json = json
H.driver = driver
return H
