-- lugger.fluentbit: runs unmodified Fluent Bit Lua filters
-- (script entry `compat = "fluent-bit", call = "fn"`; `lugger test
-- --compat fluent-bit --call fn`).
--
-- The filter is `function fn(tag, timestamp, record) return code,
-- timestamp, record end`, called once per record:
--   code -1 drop; 0 keep unchanged; 1 new timestamp and record; 2 new
--   record, old timestamp; for 1 and 2 the record may be an array of
--   records (tables), which splits the record into several. With -1 and 0
--   the other return values are ignored (as Fluent Bit does). The code is
--   read as Fluent Bit reads it (an integer, nil and non-numbers are 0);
--   another code keeps the record unchanged and logs an error (one line
--   per batch).
--
-- The record table is what Fluent Bit 5.1's pipeline hands the filter:
--   log          the body (for Docker json-file lines with the trailing
--                "\n" Docker writes, as Fluent Bit's docker parser keeps it)
--   stream, time Docker and CRI records: "stdout"/"stderr" and the line's
--                time as RFC 3339 text (Go's RFC3339Nano form, UTC)
--   _p           CRI records: "F", or "P" for a record joined from partial
--                lines (Fluent Bit keeps the first line's keys)
--   kubernetes   records of a kubernetes source: the map Fluent Bit's
--                kubernetes filter adds (pod_name, namespace_name, pod_id,
--                labels, annotations, host, pod_ip, container_name,
--                docker_id, container_hash, container_image), built from
--                lugger's metadata (and its hidden image, image_id and
--                annotation.* values: every annotation of the pod)
--   ...          the fields set by the source (JSON samples) or earlier
--                scripts
-- lugger's own metadata (log.file.path, log.iostream, k8s.*, container.*)
-- is not in the table (option lugger_metadata = true adds it, flat); it
-- stays on the record whatever the filter returns, including the records
-- a split makes. Nulls in field values are removed (Fluent Bit turns
-- msgpack nil into Lua nil) unless enable_flb_null, which gives flb_null.
-- Arrays and maps carry a metatable {type = 1} or {type = 2}, as Fluent
-- Bit 5.1 marks them, so that an empty one keeps its kind on the way back.
--
-- On the way back (codes 1 and 2) a key whose value did not change is not
-- written; `log` becomes the body (one trailing "\n" removed for Docker
-- records), `time` (RFC 3339 text) the record's time, other keys fields;
-- keys removed from the table are removed from the record, except the
-- derived stream, time, _p and kubernetes (the metadata they come from
-- stays). Tables become arrays or maps by Fluent Bit's rules: the type
-- metatable when present, else an array of length table.maxn(t) when
-- that is above 0, else a map. New keys are set in sorted order, so the
-- output's key order does not depend on Lua's table order.
--
-- Timestamps: seconds as a double (Fluent Bit's flb_time_to_double), or
-- {sec=, nsec=} with time_as_table. A returned double is split as
-- flb_time_from_double does (whole seconds, then the fraction times 1e9
-- truncated); a nil or non-number timestamp with code 1 is epoch 0.
--
-- Fluent Bit's options (the entry's compat options, `--compat-opt K=V`):
--   time_as_table   timestamp is {sec=, nsec=} instead of seconds (float)
--   type_int_key    space-separated keys whose number values are truncated
--                   to integers on return (at any depth; Fluent Bit compares
--                   only the first #key bytes of each listed name, and so
--                   does this)
--   type_array_key  space-separated keys whose tables are JSON arrays
--   enable_flb_null JSON nulls reach the filter as the global flb_null
--                   (otherwise null keys and array items are absent)
--   protected_mode  accepted; lugger always catches errors per record (the
--                   record fails and goes to the dead-letter output)
-- and lugger's:
--   tag             the tag argument (default: the pipeline's name); a "*"
--                   in it stands for the record's log.file.path with "/"
--                   as "." (as Fluent Bit's tail expands Tag kube.*)
--   lugger_metadata true: the table also holds lugger's metadata keys
--   getenv          space-separated names os.getenv may read (default: all)
--   package_path    more `;`-separated require templates (after the
--                   script's own directory)
local ffi = require("ffi")
local bit = require("bit")
local batch = require("lugger.batch")
local json = require("lugger.json")
local log = require("lugger.log")

local C = ffi.C
local band = bit.band
local type, pairs, ipairs, tostring, tonumber, error, getmetatable, setmetatable, next =
  type, pairs, ipairs, tostring, tonumber, error, getmetatable, setmetatable, next
local floor, sort, maxn = math.floor, table.sort, table.maxn
-- Never string methods in code that runs while a filter's string table is
-- in place (lugger.sandbox.use_strings): the locals are the real ones.
local format, sub, byte, gsub, find, date =
  string.format, string.sub, string.byte, string.gsub, string.find, os.date
local ffi_string = ffi.string
local null, array = json.null, json.array
-- lua_createtable's counterpart: arrays handed to the filter get an array
-- part of their length, so `#t` over a null item answers as in Fluent Bit.
local table_new = require("table.new")

local SKIP = batch.DROPPED + batch.FAILED
local NS = 1000000000LL
local VAL_DELETED = batch.VAL_DELETED
-- FLB_LUA_L2C_TYPE_ARRAY and _MAP, the values Fluent Bit's metatables hold.
local FLB_ARRAY, FLB_MAP = 1, 2

local M = {}

local KNOWN = {
  time_as_table = true, type_int_key = true, type_array_key = true,
  enable_flb_null = true, protected_mode = true, tag = true,
  lugger_metadata = true, getenv = true, package_path = true,
}

local function truthy(v)
  if type(v) == "boolean" then return v end
  v = tostring(v):lower()
  return v == "true" or v == "on" or v == "yes" or v == "1"
end

local function key_list(v)
  local list = {}
  if type(v) == "table" then
    for _, k in ipairs(v) do list[#list + 1] = tostring(k) end
  elseif v ~= nil then
    for k in tostring(v):gmatch("%S+") do list[#list + 1] = k end
  end
  return list
end

-- Parses the options (JSON object text or nil). Returns a table, or nil
-- and a message.
function M.options(text)
  local raw = {}
  if text and text ~= "" then
    local v, err = json.decode(text)
    if err then return nil, "compat options: " .. err end
    if type(v) ~= "table" then return nil, "compat options: not an object" end
    raw = v
  end
  for k in pairs(raw) do
    if not KNOWN[k] then
      return nil, "unknown Fluent Bit option '" .. tostring(k) ..
        "' (time_as_table, type_int_key, type_array_key, enable_flb_null, " ..
        "protected_mode, tag, lugger_metadata, getenv, package_path)"
    end
  end
  local getenv
  if raw.getenv ~= nil then
    getenv = {}
    for _, k in ipairs(key_list(raw.getenv)) do getenv[k] = true end
  end
  return {
    time_as_table = raw.time_as_table ~= nil and truthy(raw.time_as_table),
    int_keys = key_list(raw.type_int_key),
    array_keys = key_list(raw.type_array_key),
    flb_null = raw.enable_flb_null ~= nil and truthy(raw.enable_flb_null),
    show_meta = raw.lugger_metadata ~= nil and truthy(raw.lugger_metadata),
    tag = raw.tag ~= nil and tostring(raw.tag) or nil,
    getenv = getenv,
    package_path = raw.package_path ~= nil and tostring(raw.package_path) or nil,
  }
end

-- Adds what Fluent Bit gives filters to a sandbox env (before the script
-- runs).
function M.prepare_env(env, o)
  if o.flb_null then env.flb_null = null end
end

-- Whether record key k is one of `list` as Fluent Bit's l2c lookup decides:
-- strncmp(listed, k, #k) == 0.
local function l2c_match(list, k)
  for i = 1, #list do
    if sub(list[i], 1, #k) == k then return true end
  end
  return false
end

-- Go's time.RFC3339Nano in UTC (trailing zeros of the fraction dropped),
-- as Docker and containerd write their line times.
-- The text of the last second formatted: lines come in time order, so
-- most records of a batch share it.
local last_sec, last_text = nil, nil

local function rfc3339nano(ns)
  local sec, nsec = tonumber(ns / NS), tonumber(ns % NS)
  if nsec < 0 then sec, nsec = sec - 1, nsec + 1e9 end
  if sec ~= last_sec then
    last_sec, last_text = sec, date("!%Y-%m-%dT%H:%M:%S", sec)
  end
  local s = last_text
  if nsec ~= 0 then
    local frac = format("%09d", nsec)
    local e = #frac
    while byte(frac, e) == 48 do e = e - 1 end
    s = s .. "." .. sub(frac, 1, e)
  end
  return s .. "Z"
end

-- The kubernetes filter's extract_hash: "docker-pullable://img@sha256:x"
-- -> "img@sha256:x" (the part after "<scheme>://"); an imageID without a
-- scheme is taken whole.
local function extract_hash(s)
  local colon = find(s, ":", 1, true)
  if not colon then return nil end
  local e = colon
  while sub(s, e + 1, e + 1) == "/" do e = e + 1 end
  if e == colon then return s end
  return sub(s, e + 1)
end

local function deep_equal(a, b)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  for k, v in pairs(a) do
    if not deep_equal(v, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

-- Returns the per-record loop of a filter: loop(fn, from), as the driver
-- calls view.run_process. `view` is the runtime's record view.
function M.loop(view, o, tag)
  -- Per filter, so one script changing a marker cannot affect another.
  local ARRAY_MT, MAP_MT = { type = FLB_ARRAY }, { type = FLB_MAP }
  local flb_null = o.flb_null and null or nil
  local int_keys, array_keys = o.int_keys, o.array_keys
  local convert_keys = #int_keys > 0 or #array_keys > 0

  -- Set when to_flb left out a null: the value Fluent Bit would write
  -- back differs from the stored one even if the filter leaves it alone.
  local lost_null = false

  -- A lugger value (lugger.json's decoding) as Fluent Bit hands it.
  local function to_flb(v)
    if type(v) ~= "table" then return v end
    if v == null then
      if flb_null == nil then lost_null = true end
      return flb_null
    end
    if getmetatable(v) == "lugger.array" then
      local n = #v
      local t = table_new(n, 0)
      for i = 1, n do t[i] = to_flb(v[i]) end
      return setmetatable(t, ARRAY_MT)
    end
    local t = {}
    for k, x in pairs(v) do t[k] = to_flb(x) end
    return setmetatable(t, MAP_MT)
  end

  local function copy(v)
    if type(v) ~= "table" or v == null then return v end
    local mt = getmetatable(v)
    local t = mt == ARRAY_MT and table_new(maxn(v), 0) or {}
    for k, x in pairs(v) do t[k] = copy(x) end
    return setmetatable(t, type(mt) == "table" and mt or nil)
  end

  local from_flb

  local function to_array(v, len)
    local out = {}
    for i = 1, len do
      local x = v[i]
      if x == nil then x = null else x = from_flb(x) end
      out[i] = x == nil and null or x
    end
    return array(out)
  end

  -- A value of map key k on the way back (type_int_key, type_array_key).
  local function map_value(k, x)
    if convert_keys then
      local tx = type(x)
      if tx == "number" and l2c_match(int_keys, k) then
        return x >= 0 and floor(x) or -floor(-x)
      elseif tx == "table" and x ~= null and l2c_match(array_keys, k) then
        return to_array(x, #x)
      end
    end
    return from_flb(x)
  end

  local function key_text(k)
    if type(k) == "string" then return k end
    if type(k) == "number" then
      return (k == floor(k) and k > -2 ^ 53 and k < 2 ^ 53) and format("%d", k) or tostring(k)
    end
    return nil
  end

  -- A value the filter returned, as a lugger value: functions and other
  -- values msgpack cannot hold are left out, as Fluent Bit leaves them.
  from_flb = function(v)
    local tv = type(v)
    if tv ~= "table" then
      if tv == "string" or tv == "number" or tv == "boolean" then return v end
      return nil
    end
    if v == null then return null end
    local mt = getmetatable(v)
    if mt == "lugger.array" then return to_array(v, #v) end
    if type(mt) == "table" then
      if mt.type == FLB_ARRAY or mt.__name == "cjson.array" or mt.__name == "cjson.empty_array" then
        return to_array(v, #v)
      end
    end
    if not (type(mt) == "table" and mt.type == FLB_MAP) then
      local n = maxn(v)
      if n > 0 then return to_array(v, n) end
    end
    local out = {}
    for k, x in pairs(v) do
      local ks = key_text(k)
      if ks ~= nil then out[ks] = map_value(ks, x) end
    end
    return out
  end

  -- What every record of the batch shares: the names hidden from the
  -- filter, lugger's metadata values, and the kubernetes map (read once
  -- per loop call, i.e. once per batch: the batch's metadata is fixed).
  local shared_b, shared_gen, hidden, meta_kv, kube = nil, nil, nil, nil, nil
  local wild = find(tag, "*", 1, true) ~= nil
  local batch_tag = tag

  local function load_shared(b)
    if shared_b == b and shared_gen == b.gen then return end
    shared_b, shared_gen = b, b.gen
    hidden = { time = true, body = true, ["log.iostream"] = true }
    meta_kv, kube = {}, nil
    local m = b.meta
    if m ~= nil then
      for k = 0, m.n - 1 do
        local kv = m.kv[k]
        local name = ffi_string(kv.key, kv.key_len)
        hidden[name] = true
        if kv.str ~= nil then
          meta_kv[name] = ffi_string(kv.str, kv.str_len)
        else
          meta_kv[name] = tonumber(kv.num)
        end
      end
    end
    local mk = meta_kv
    if wild then
      local p = mk["log.file.path"]
      p = type(p) == "string" and gsub(gsub(p, "/", "."), "^%.", "") or ""
      batch_tag = gsub(tag, "%*", (gsub(p, "%%", "%%%%")))
    end
    if mk["k8s.pod.name"] or mk["k8s.namespace.name"] then
      -- The keys and their order of Fluent Bit's kubernetes filter
      -- (kube_meta.c, merge_meta); a key is there when its value is known.
      local labels, annotations
      for name, v in pairs(mk) do
        if sub(name, 1, 14) == "k8s.pod.label." then
          labels = labels or setmetatable({}, MAP_MT)
          labels[sub(name, 15)] = v
        elseif sub(name, 1, 19) == "k8s.pod.annotation." then
          annotations = annotations or setmetatable({}, MAP_MT)
          annotations[sub(name, 20)] = v
        end
      end
      -- The kubernetes source keeps every annotation (and the status
      -- image and imageID) hidden; the listed annotations are also in
      -- the record, which is all a source without them has.
      local hid, all_annotations = {}, nil
      for k = 0, (m ~= nil and m.nhidden or 0) - 1 do
        local kv = m.hidden[k]
        local name = ffi_string(kv.key, kv.key_len)
        local v = ffi_string(kv.str, kv.str_len)
        if sub(name, 1, 11) == "annotation." then
          all_annotations = all_annotations or setmetatable({}, MAP_MT)
          all_annotations[sub(name, 12)] = v
        else
          hid[name] = v
        end
      end
      annotations = all_annotations or annotations
      local image = hid.image or mk["container.image.name"]
      if not hid.image and image and mk["container.image.tag"] then
        image = image .. ":" .. mk["container.image.tag"]
      end
      kube = setmetatable({
        pod_name = mk["k8s.pod.name"],
        namespace_name = mk["k8s.namespace.name"],
        pod_id = mk["k8s.pod.uid"],
        labels = labels,
        annotations = annotations,
        host = mk["k8s.node.name"],
        pod_ip = mk["k8s.pod.ip"],
        container_name = mk["k8s.container.name"],
        docker_id = mk["container.id"],
        container_hash = hid.image_id and extract_hash(hid.image_id),
        container_image = image,
      }, MAP_MT)
    end
  end

  -- Record i as the filter's table: returns the pristine values (to
  -- compare with on return) and the table handed to the filter.
  local function read(b, i)
    local r = b.recs[i]
    local flags = r.flags
    local orig, given = {}, {}
    local body = view.get(i, "body")
    if type(body) == "string" then
      if band(flags, batch.FMT_DOCKER) ~= 0 then body = body .. "\n" end
      orig.log = body
    elseif body ~= nil then
      orig.log = to_flb(body)
    end
    if band(flags, batch.FMT_DOCKER + batch.FMT_CRI) ~= 0 and band(flags, batch.HAS_STREAM) ~= 0 then
      orig.stream = band(flags, batch.STDERR) ~= 0 and "stderr" or "stdout"
      orig.time = rfc3339nano(r.time_ns)
      -- Fluent Bit's cri multiline parser keeps the first line's keys:
      -- a record joined from P lines has _p = "P".
      if band(flags, batch.FMT_CRI) ~= 0 then
        orig._p = band(flags, batch.CRI_PARTIAL) ~= 0 and "P" or "F"
      end
    end
    if kube ~= nil then orig.kubernetes = kube end
    if o.show_meta then
      for name in pairs(meta_kv) do
        local v = to_flb(view.get(i, name))
        if v ~= nil then orig[name] = v end
      end
      local s = view.get(i, "log.iostream")
      if s ~= nil then orig["log.iostream"] = to_flb(s) end
    end
    local lossy
    local f = r.field_head
    while f >= 0 do
      local fd = b.fields[f]
      if fd.type ~= VAL_DELETED then
        local k = ffi_string(b.data + fd.key_off, fd.key_len)
        if not hidden[k] then
          lost_null = false
          local v = to_flb(view.get(i, k))
          if v ~= nil then orig[k] = v end
          if lost_null then
            lossy = lossy or {}
            lossy[k] = true
          end
        end
      end
      f = fd.next
    end
    for k, v in pairs(orig) do given[k] = copy(v) end
    return orig, setmetatable(given, MAP_MT), lossy
  end

  -- Keys derived from the record's format and metadata: removing them
  -- from the table does not remove what they come from (nor does removing
  -- a metadata key that lugger_metadata shows).
  local DERIVED = { stream = true, time = true, _p = true, kubernetes = true }

  -- Makes record i look like table `new`, given `orig` (what read() gave).
  -- `lossy`: keys whose stored values hold nulls the table left out; they
  -- are written back as the table has them (removed when absent).
  local function apply(b, i, orig, new, lossy)
    if type(new) ~= "table" then
      error("the filter returned a " .. type(new) .. " as the record, not a table", 0)
    end
    for k in pairs(orig) do
      if new[k] == nil and not DERIVED[k] and not hidden[k] then
        view.set(i, k == "log" and "body" or k, nil)
      end
    end
    if lossy then
      for k in pairs(lossy) do
        if new[k] == nil and orig[k] == nil then view.set(i, k, nil) end
      end
    end
    local keys = {}
    for k in pairs(new) do
      local ks = key_text(k)
      if ks ~= nil then keys[#keys + 1] = ks end
    end
    sort(keys)
    for _, k in ipairs(keys) do
      local raw = new[k]
      if raw == nil then raw = new[tonumber(k)] end
      if not deep_equal(raw, orig[k]) or (lossy and lossy[k]) then
        local v = map_value(k, raw)
        if k == "log" then
          if type(v) == "string" and band(b.recs[i].flags, batch.FMT_DOCKER) ~= 0
              and byte(v, #v) == 10 then
            v = sub(v, 1, #v - 1)
          end
          view.set(i, "body", v)
        elseif k == "time" then
          if type(v) ~= "string" then
            error("the filter set record.time to a " .. type(v) ..
                  "; lugger takes it as the record's time, which needs RFC 3339 text", 0)
          end
          view.set(i, "time", v)
        else
          view.set(i, k, v)
        end
      end
    end
  end

  -- lua_tointeger: a number (or numeric text) truncated toward zero, else 0.
  local function tointeger(v)
    v = tonumber(v)
    if v == nil or v ~= v or v >= 2 ^ 63 or v < -2 ^ 63 then return 0 end
    return v >= 0 and floor(v) or -floor(-v)
  end

  -- Code 1's timestamp as Fluent Bit's filter reads it: with
  -- time_as_table a table's sec and nsec (lua_tointeger each), anything
  -- else keeps the record's time; without it lua_tonumber of the value
  -- (nil and non-numbers are 0), split as flb_time_from_double does.
  local function set_time(b, i, ts)
    local sec, nsec = 0, 0
    if o.time_as_table then
      if type(ts) ~= "table" then return end
      sec, nsec = tointeger(ts.sec), tointeger(ts.nsec)
    else
      ts = tonumber(ts)
      if ts ~= nil and ts == ts and ts > -9.2e9 and ts < 9.2e9 then
        sec = ts >= 0 and floor(ts) or -floor(-ts)
        nsec = floor((ts - sec) * 1e9)
      end
    end
    local rc = C.lg_ffi_rec_set_time(b, i, NS * sec + nsec)
    if rc ~= 0 then error("setting the time: error " .. tostring(rc), 0) end
  end

  local bad_codes, bad_code = 0, 0

  return function(fn, from)
    local b = view.batch()
    load_shared(b)
    local i = from
    while i < b.n do
      if band(b.recs[i].flags, SKIP) ~= 0 then
        i = i + 1
      else
        view.set_current(i)
        local tns = b.recs[i].time_ns
        local sec, nsec = tonumber(tns / NS), tonumber(tns % NS)
        if nsec < 0 then sec, nsec = sec - 1, nsec + 1e9 end
        local ts
        if o.time_as_table then
          ts = setmetatable({ sec = sec, nsec = nsec }, MAP_MT)
        else
          ts = sec + nsec / 1e9
        end
        local orig, given, lossy = read(b, i)
        local code, nts, nrec = fn(batch_tag, ts, given)
        -- (int) lua_tointeger, as Fluent Bit reads the code: nil and
        -- other non-numbers are 0 (keep).
        code = tointeger(code)
        if code == -1 then
          C.lg_ffi_rec_drop(b, i)
          i = i + 1
        elseif code == 0 then
          i = i + 1
        elseif code == 1 or code == 2 then
          if type(nrec) ~= "table" then
            error("the filter returned code " .. code .. " and a " .. type(nrec) .. " as the record", 0)
          end
          if code == 1 then set_time(b, i, nts) end
          if type(nrec[1]) == "table" and next(nrec, #nrec) == nil then
            -- An array of records: record i becomes the first, the others
            -- are inserted after it with its time, offsets, routes and
            -- metadata.
            apply(b, i, orig, nrec[1], lossy)
            local last = i
            for k = 2, #nrec do
              local r = nrec[k]
              if type(r) ~= "table" then
                error("record " .. k .. " of the returned array is a " .. type(r), 0)
              end
              local j = C.lg_ffi_batch_insert(b, last, "", 0)
              if j < 0 then error("splitting the record: error " .. tostring(j), 0) end
              view.set_current(j)
              local o2 = read(b, j)
              apply(b, j, o2, r)
              last = j
            end
            i = last + 1
          else
            apply(b, i, orig, nrec, lossy)
            i = i + 1
          end
        else
          -- Fluent Bit keeps the record as it was and logs an error.
          bad_codes = bad_codes + 1
          bad_code = code
          i = i + 1
        end
      end
    end
    if bad_codes > 0 then
      log.write("error", o.component or "fluent-bit",
                format("%s: unexpected Lua script return code %d, original record kept (%d record%s)",
                       o.path or "filter", bad_code, bad_codes, bad_codes == 1 and "" or "s"))
      bad_codes = 0
    end
  end
end

-- Exposed for specs.
M.rfc3339nano = rfc3339nano

return M
