-- lugger.driver: the trusted runtime that loads user scripts into their
-- sandboxes and runs pipelines over C batches.
--
-- lg_lua.c makes one runtime per lua_State (one per worker thread) and
-- calls rt.run once per batch inside its single lua_pcall; the loop over
-- records runs here, in Lua, so the JIT sees it whole.
--
-- Per-record error isolation without a pcall per record: a script's loop
-- runs under one xpcall; when it raises, the record being processed is
-- failed (error text "<script>:<line>: <msg> (file <path> offset <n>)")
-- and the loop resumes at the next record under a new xpcall. The cost is
-- one xpcall per script per batch plus one per error.
--
-- Batch mode (process_batch): when process_batch raises, the record last
-- yielded by batch:records() fails and process_batch is called again with
-- a batch of the records after it; records after a failure are thus seen
-- by a new call, whose module-level state is whatever the script left. If
-- the error comes before records() yielded anything, every remaining
-- record fails with it (none is passed through unprocessed).
--
-- Scripts of a pipeline run in order, each over the whole batch; a record
-- dropped or failed by one script is not seen by the later ones. A route
-- set by a script stays unless a later script routes the record again.
local ffi = require("ffi")
local batch = require("lugger.batch")
local record = require("lugger.record")
local sandbox = require("lugger.sandbox")
local json = require("lugger.json")
local log = require("lugger.log")
local mem = require("lugger.mem")
local fluentbit = require("lugger.fluentbit")

local getinfo = debug.getinfo
local type, tostring, ipairs, pcall, xpcall, error, rawget, load =
  type, tostring, ipairs, pcall, xpcall, error, rawget, load
local sub = string.sub

local M = {}

-- The error rt.run ends with when a script ran out of memory (lg_lua.h,
-- LG_LUA_OOM_TAG).
M.OOM = "lugger: the Lua state ran out of memory"

-- Chunk names ("@path") of every user script loaded in this Lua state:
-- the error handler attributes an error to the innermost frame of one.
local user_sources = {}

-- xpcall handler: the error value and the innermost user-script frame.
local function on_error(e)
  mem.headroom(true)
  for level = 2, 200 do
    local info = getinfo(level, "Sl")
    if not info then break end
    if user_sources[info.source] then
      return { e, info.short_src, info.currentline }
    end
  end
  return { e }
end

-- "<script>:<line>: <msg>", using the error's own position when it has one
-- in a user script, else the innermost user frame, else `fallback_src`
-- and `fallback_line`.
local function error_text(h, fallback_src, fallback_line)
  local e, src, line
  if type(h) == "table" then
    e, src, line = h[1], h[2], h[3]
  else
    e = h
  end
  local msg
  if type(e) == "string" then
    msg = e
  elseif type(e) == "table" and getmetatable(e) == nil then
    -- error({code = 1}): its contents, not "table: 0x7f22...".
    local ok, s = pcall(json.encode, e)
    msg = "error object " .. (ok and s or "(a table)")
  else
    local ok, s = pcall(tostring, e)
    msg = ok and type(s) == "string" and s or ("error object of type " .. type(e))
  end
  src, line = src or fallback_src, line or fallback_line
  if src then
    local prefix = src .. ":"
    if sub(msg, 1, #prefix) ~= prefix then
      msg = prefix .. tostring(line or "?") .. ": " .. msg
    end
  end
  return msg
end

-- Creates a runtime. opts:
--   output_names   list of output names; route name -> 0-based position
--   dynamic_routes when true, unknown route names get the next free index
--                  (for `lugger test`, which has no outputs)
--   log_errors     log each failed record (rate-limited); default true
--   progress       address (a number) of the host's int64_t[2] watchdog
--                  slots: [0] the record being processed, [1] the 1-based
--                  index of the script running (lg_lua.h)
--   print_stdout   scripts' print() writes to standard output instead of
--                  lugger's log (`lugger repl`, lugger.testing)
--   print_stderr   scripts' print() writes to standard error, each line
--                  prefixed with "[<script>:<line>] " (`lugger test`)
function M.new(opts)
  opts = opts or {}
  local progress = opts.progress and ffi.cast("int64_t *", opts.progress)
    or ffi.new("int64_t[2]")
  local routes, names = {}, {}
  for i, name in ipairs(opts.output_names or {}) do
    if routes[name] == nil then routes[name] = i - 1 end
    names[i - 1] = name
  end
  local nnames = #(opts.output_names or {})
  local dynamic = opts.dynamic_routes
  local log_errors = opts.log_errors ~= false

  local function resolve_route(name)
    local idx = routes[name]
    if idx then return idx end
    if dynamic and nnames < 64 then
      idx = nnames
      nnames = nnames + 1
      routes[name], names[idx] = idx, name
      return idx
    end
    return nil, "unknown output '" .. tostring(name) .. "'"
  end

  local view = record.new(resolve_route, progress)
  local pipelines = {}
  local rt = { errors = 0 }

  -- Script errors are logged, at most 20 lines per second per runtime.
  local log_sec, log_count, log_skipped = 0, 0, 0
  local function log_failure(component, text)
    if not log_errors then return end
    local now = os.time()
    if now ~= log_sec then
      if log_skipped > 0 then
        log.write("error", component, log_skipped .. " more script errors not logged")
      end
      log_sec, log_count, log_skipped = now, 0, 0
    end
    if log_count < 20 then
      log_count = log_count + 1
      log.write("error", component, text)
    else
      log_skipped = log_skipped + 1
    end
  end

  local function load_script(s, component, pname)
    local path = s.path
    -- Decoded whether or not the script has init: params that are not
    -- JSON (`lugger test --params '{bad'`) are a mistake to report, not
    -- to ignore.
    local params = {}
    if s.params and s.params ~= "" then
      local perr
      params, perr = json.decode(s.params)
      if perr then return nil, path .. ": params: " .. perr end
    end
    local fbopts
    if s.compat ~= nil then
      if s.compat ~= "fluent-bit" then
        return nil, path .. ": unknown compat '" .. tostring(s.compat) .. "' (fluent-bit)"
      end
      if type(s.call) ~= "string" or s.call == "" then
        return nil, path .. ": compat = \"fluent-bit\" needs call = \"<function name>\""
      end
      local err
      fbopts, err = fluentbit.options(s.compat_opts)
      if not fbopts then return nil, path .. ": " .. err end
    end
    local env = sandbox.env(path, component, {
      print_stdout = opts.print_stdout,
      print_stderr = opts.print_stderr,
      compat = fbopts,
      on_chunk = function(src) user_sources[src] = true end,
    })
    if fbopts then fluentbit.prepare_env(env, fbopts) end
    local fn, err = load(s.src, "@" .. path, "t", env)
    if not fn then return nil, err end
    user_sources["@" .. path] = true
    -- A Fluent Bit filter's string extensions work as methods while its
    -- own code runs (lugger.sandbox.use_strings).
    local strings = fbopts and env.string or nil
    if strings then sandbox.use_strings(strings) end
    local ok, h = xpcall(fn, on_error)
    if strings then sandbox.use_strings(nil) end
    if not ok then return nil, error_text(h, path) end
    if fbopts then
      -- A Fluent Bit filter: no init/process; `call` names the function.
      fbopts.component, fbopts.path = component, path
      local f = rawget(env, s.call)
      if type(f) ~= "function" then
        return nil, path .. ": call = '" .. s.call .. "': the script defines no such function"
      end
      local info = getinfo(f, "S")
      return {
        path = path,
        fn = f,
        env = env,
        fluentbit = true,
        loop = fluentbit.loop(view, fbopts, fbopts.tag or tostring(pname)),
        strings = strings,
        src = info.short_src,
        line = info.linedefined,
      }
    end
    local init = rawget(env, "init")
    if init ~= nil then
      if type(init) ~= "function" then
        return nil, path .. ": init is a " .. type(init) .. ", not a function"
      end
      ok, h = xpcall(init, on_error, params)
      if not ok then return nil, error_text(h, path) end
    end
    local process, process_batch = rawget(env, "process"), rawget(env, "process_batch")
    if process ~= nil and type(process) ~= "function" then
      return nil, path .. ": process is a " .. type(process) .. ", not a function"
    end
    if process_batch ~= nil and type(process_batch) ~= "function" then
      return nil, path .. ": process_batch is a " .. type(process_batch) .. ", not a function"
    end
    if process and process_batch then
      return nil, path .. ": defines both process and process_batch; keep one"
    end
    if not process and not process_batch then
      return nil, path .. ": defines neither process(rec) nor process_batch(batch)"
    end
    local f = process or process_batch
    local info = getinfo(f, "S")
    return {
      path = path,
      fn = f,
      env = env,
      is_process = process ~= nil,
      loop = process and view.run_process or view.run_batch,
      src = info.short_src,
      line = info.linedefined,
    }
  end

  -- Loads `scripts` ({path=, src=, params=JSON text or nil, and for a
  -- Fluent Bit filter compat="fluent-bit", call=, compat_opts=JSON text
  -- (lugger.fluentbit)}, in order) as
  -- pipeline `idx` named `name`, running each one's init(params). Replaces
  -- an earlier pipeline `idx` only when every script loads. Returns true,
  -- or nil and "<script>:<line>: <msg>".
  function rt.add_pipeline(idx, name, scripts)
    local component = "pipeline." .. tostring(name)
    local loaded = {}
    for k, s in ipairs(scripts) do
      local sc, err = load_script(s, component, name)
      if not sc then return nil, err end
      loaded[k] = sc
    end
    pipelines[idx] = { name = name, scripts = loaded, component = component }
    return true
  end

  -- Runs the pipeline's scripts from script `si0` (1-based), the first
  -- of them from record `from0`. A memory error fails its record (or, in
  -- batch mode before records() yielded one, every remaining record) and
  -- then ends the run with M.OOM: a state that ran out of memory usually
  -- still holds it (a cache that grew), so the host recreates the state
  -- and resumes after that record (progress[1] and progress[0] say where).
  local function run_pipeline(p, b, si0, from0)
    local failed = 0
    for si = si0, #p.scripts do
      local s = p.scripts[si]
      local from = si == si0 and from0 or 0
      progress[1] = si
      progress[0] = -1
      local strings = s.strings
      if strings then sandbox.use_strings(strings) end
      -- b.n is read again each time: a Fluent Bit filter may split records.
      while from < b.n do
        local ok, h = xpcall(s.loop, on_error, s.fn, from)
        if ok then break end
        -- Memory errors do not go through on_error.
        mem.headroom(true)
        local oom = h == "not enough memory"
        -- LUA_ERRERR: on_error itself failed, which for this trusted
        -- handler means the stack was exhausted (unbounded recursion).
        if h == "error in error handling" then
          h = "stack overflow (the error handler had no stack left)"
        end
        local msg = error_text(h, s.src, s.line)
        local i = view.current()
        if i < 0 then
          for j = from, b.n - 1 do
            if not view.skipped(j) then
              log_failure(p.component, view.fail(j, msg))
              failed = failed + 1
            end
          end
          if oom then
            progress[0] = -1
            error(M.OOM, 0)
          end
          mem.headroom(false)
          break
        end
        log_failure(p.component, view.fail(i, msg))
        failed = failed + 1
        if oom then
          progress[0] = i
          error(M.OOM, 0)
        end
        from = i + 1
        mem.headroom(false)
      end
      if strings then sandbox.use_strings(nil) end
    end
    return failed
  end

  -- Runs pipeline `idx` over batch `b` (an lg_batch_t pointer, or its
  -- address as a number), from script `si` (1-based, default 1) and, in
  -- that script, from record `from` (0-based, default 0): a run that
  -- ended with M.OOM is resumed so on a new state. Returns the number of
  -- records that failed. A pipeline without scripts, or never added,
  -- leaves the batch alone.
  function rt.run(idx, b, si, from)
    local p = pipelines[idx]
    if p == nil or #p.scripts == 0 then return 0 end
    if type(b) == "number" then b = ffi.cast(batch.ptr_t, b) end
    view.begin(b)
    local ok, failed = pcall(run_pipeline, p, b, si or 1, from or 0)
    view.finish()
    if not ok then
      sandbox.use_strings(nil)
      error(failed, 0)
    end
    rt.errors = rt.errors + failed
    return failed
  end

  -- The route name of output index idx (0-based), or nil.
  function rt.output_name(idx)
    return names[idx]
  end

  -- "<script>:<line>" of each script's process function in pipeline idx,
  -- one string per script, newline-separated: the host keeps it to name
  -- the script in errors it raises when the state itself is out of memory.
  function rt.where(idx)
    local p, out = pipelines[idx], {}
    for k, s in ipairs(p and p.scripts or {}) do
      out[k] = tostring(s.src) .. ":" .. tostring(s.line)
    end
    return table.concat(out, "\n")
  end

  -- Where pipeline idx's scripts keep state across records (module-level
  -- locals or globals they assign, module-level tables they store into;
  -- lugger.statecheck), one "<script>:<line>: <what>" per line, "" when
  -- none is found: `lugger check`, and `lugger run` at each load, warn
  -- about them on a stateless pipeline.
  function rt.state_writes(idx)
    -- Loaded on first use: only states that look (check, one per run's load).
    local statecheck = require("lugger.statecheck")
    local p, out = pipelines[idx], {}
    for _, s in ipairs(p and p.scripts or {}) do
      for _, w in ipairs(statecheck.find(s.fn, s.env, "@" .. s.path, rawget(s.env, "init"))) do
        out[#out + 1] = w
      end
    end
    return table.concat(out, "\n")
  end

  -- The constant route names in pipeline idx's scripts that are no
  -- output (lugger.routecheck), one "<script>:<line>: ..." per line, ""
  -- when none: `lugger check` reports them, as each record taking such a
  -- route would fail.
  function rt.unknown_routes(idx)
    local routecheck = require("lugger.routecheck") -- only `lugger check` needs it
    local p, out = pipelines[idx], {}
    local known = {}
    for i = 0, nnames - 1 do known[#known + 1] = names[i] end
    for _, s in ipairs(p and p.scripts or {}) do
      if not s.fluentbit then
        for _, r in ipairs(routecheck.find(s.fn, s.is_process)) do
          if routes[r.name] == nil then
            out[#out + 1] = s.path .. ":" .. r.line .. ": routes to '" .. r.name
              .. "', which is not an output (outputs: " .. table.concat(known, ", ") .. ")"
          end
        end
      end
    end
    return table.concat(out, "\n")
  end

  function rt.has_pipeline(idx)
    local p = pipelines[idx]
    return p ~= nil and #p.scripts > 0
  end

  return rt
end

return M
