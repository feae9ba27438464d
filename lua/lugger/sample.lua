-- lugger.sample: the `sample` area of src/pipeline/lg_ffi.h (lg_ffi_sample_*): sample
-- logs framed into batches by the collector's own framing (or read as one
-- JSON object per line), exactly as `lugger test` reads them. Trusted code
-- only (lugger.testing, lugger.repl): user scripts never see this module.
local ffi = require("ffi")
local base = require("lugger.base")
local batch = require("lugger.batch")

local M = {}

M.cdef = [[
int lg_ffi_sample_format(const char *name, size_t len, int *out);
int lg_ffi_sample_create(int format, const char *path, size_t plen, struct lg_sample **out);
int lg_ffi_sample_destroy(struct lg_sample *s);
int lg_ffi_sample_begin(struct lg_sample *s, lg_batch_t *b);
int lg_ffi_sample_feed(struct lg_sample *s, const char *buf, size_t len, int64_t now_ns, lg_batch_t *b, char *err, size_t errlen);
int lg_ffi_sample_finish(struct lg_sample *s, int64_t now_ns, lg_batch_t *b, char *err, size_t errlen);
int lg_ffi_sample_copy(lg_batch_t *dst, const lg_batch_t *src, uint32_t i);
]]
ffi.cdef(M.cdef)

local C = ffi.C

local FORMATS = "line, cri, docker, json, auto"
local errno_text = { [base.E2BIG] = "the sample is larger than 4 GiB" }

local fmtbox = ffi.new("int[1]")
local samplebox = ffi.new("struct lg_sample *[1]")
local errbuf = ffi.new("char[512]")

-- The numeric format for a name (line, cri, docker, json, auto), or nil
-- and a message.
function M.format(name)
  name = name or "auto"
  if type(name) ~= "string" or C.lg_ffi_sample_format(name, #name, fmtbox) ~= 0 then
    return nil, "unknown format '" .. tostring(name) .. "' (" .. FORMATS .. ")"
  end
  return fmtbox[0]
end

-- Frames `text` (the bytes of one sample) into a new batch (freed when
-- collected). opts: format (name, default "auto"), path (log.file.path of
-- the records; default none), now_ns (the time of lines that carry none;
-- default the current time). Returns the batch, or nil and a message.
function M.frame(text, opts)
  opts = opts or {}
  local fmt, ferr = M.format(opts.format)
  if not fmt then return nil, ferr end
  local path = opts.path or ""
  if C.lg_ffi_sample_create(fmt, path, #path, samplebox) ~= 0 then
    return nil, "out of memory"
  end
  local s = samplebox[0]
  local b = batch.new({})
  C.lg_ffi_sample_begin(s, b)
  local now = opts.now_ns or 0
  local rc = C.lg_ffi_sample_feed(s, text, #text, now, b, errbuf, 512)
  if rc == 0 then
    rc = C.lg_ffi_sample_finish(s, now, b, errbuf, 512)
  end
  C.lg_ffi_sample_destroy(s)
  if rc == base.EINVAL then
    return nil, ffi.string(errbuf)
  elseif rc ~= 0 then
    return nil, (path ~= "" and path or "sample") .. ": " .. base.message(rc, errno_text)
  end
  return b
end

-- Reads the sample file at `path` (which becomes the records'
-- log.file.path) into a new batch; opts as for frame. Returns the batch, or
-- nil and a message.
function M.read(path, opts)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local text = f:read("*a")
  f:close()
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.path = path
  return M.frame(text, o)
end

-- Appends a copy of record i (0-based) of batch src to batch dst (an
-- empty dst takes src's metadata and fingerprint). Returns its index.
function M.copy(dst, src, i)
  local rc = C.lg_ffi_sample_copy(dst, src, i)
  if rc < 0 then
    error("copying a record: " .. base.message(rc, errno_text), 2)
  end
  return rc
end

return M
