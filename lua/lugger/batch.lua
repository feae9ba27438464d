-- lugger.batch: the C batch as the FFI sees it (src/pipeline/lg_batch.h), and the
-- lg_ffi_batch_* / lg_ffi_meta_* / lg_ffi_abi_* area (src/pipeline/lg_ffi.h) that
-- specs and tools use to build batches. Trusted code only: user scripts
-- never see this module.
local ffi = require("ffi")
local base = require("lugger.base")

local M = {}

-- The FFI-visible prefix of lg_batch_t and the structs it points to. Keep
-- in sync with src/pipeline/lg_batch.h; spec/ffi_spec.lua compares every offset
-- with the C compiler's through lg_ffi_abi_layout.
M.types = [[
typedef struct lg_field {
  uint32_t key_off, key_len;
  int32_t next;
  uint32_t type;
  int64_t i;
  double d;
  uint32_t s_off, s_len;
} lg_field_t;
typedef struct lg_rec {
  int64_t time_ns;
  uint64_t offset;
  uint64_t end_offset;
  uint32_t body_off;
  uint32_t body_len;
  int32_t field_head;
  int32_t field_tail;
  uint64_t routes;
  uint32_t flags;
  uint32_t err_off;
  uint32_t err_len;
  uint32_t key_bloom;
} lg_rec_t;
typedef struct lg_meta_kv {
  const char *key;
  size_t key_len;
  const char *str;
  size_t str_len;
  int64_t num;
} lg_meta_kv_t;
typedef struct lg_meta {
  int refs;
  uint32_t n;
  lg_meta_kv_t *kv;
  char *json;
  size_t json_len;
  uint32_t nhidden;
  lg_meta_kv_t *hidden;
} lg_meta_t;
typedef struct lg_batch {
  uint32_t n;
  uint32_t gen;
  lg_rec_t *recs;
  char *data;
  uint64_t data_len;
  lg_field_t *fields;
  uint32_t nfields;
  uint32_t source_id;
  const lg_meta_t *meta;
} lg_batch_t;
]]

M.cdef = [[
int lg_ffi_batch_create(size_t data_hint, lg_batch_t **out);
int lg_ffi_batch_destroy(lg_batch_t *b);
int lg_ffi_batch_reset(lg_batch_t *b);
int lg_ffi_batch_add(lg_batch_t *b, const char *body, size_t len, int64_t time_ns, uint64_t offset, uint64_t end_offset, uint32_t flags, uint64_t routes);
int lg_ffi_batch_insert(lg_batch_t *b, uint32_t i, const char *body, size_t len);
int lg_ffi_batch_set_fingerprint(lg_batch_t *b, uint64_t fingerprint);
int lg_ffi_batch_set_meta(lg_batch_t *b, const lg_meta_t *m);
int lg_ffi_batch_encode(const lg_batch_t *b, uint32_t i, char *out, size_t cap, size_t *outlen);
int lg_ffi_meta_create(lg_meta_t **out);
int lg_ffi_meta_add_str(lg_meta_t *m, const char *key, size_t klen, const char *val, size_t vlen);
int lg_ffi_meta_add_int(lg_meta_t *m, const char *key, size_t klen, int64_t val);
int lg_ffi_meta_add_hidden_str(lg_meta_t *m, const char *key, size_t klen, const char *val, size_t vlen);
int lg_ffi_meta_seal(lg_meta_t *m);
int lg_ffi_meta_unref(const lg_meta_t *m);
int lg_ffi_abi_layout(const char *type, size_t tlen, const char *field, size_t flen, uint64_t *out);
]]

-- Busted reloads modules per spec file; types may be declared only once
-- per state, function declarations may be repeated.
if not pcall(ffi.typeof, "lg_batch_t") then
  ffi.cdef(M.types)
end
ffi.cdef(M.cdef)

local C = ffi.C

-- Record flags (LG_REC_*) and value types (LG_VAL_*), as in lg_batch.h.
M.STDERR, M.HAS_STREAM, M.TRUNCATED, M.PARSE_ERROR = 0x1, 0x2, 0x4, 0x8
M.DROPPED, M.FAILED, M.ROUTED, M.SHADOWED = 0x10, 0x20, 0x40, 0x80
M.FMT_CRI, M.FMT_DOCKER, M.CRI_PARTIAL = 0x100, 0x200, 0x400
M.VAL_DELETED, M.VAL_NULL, M.VAL_BOOL, M.VAL_INT = 0, 1, 2, 3
M.VAL_NUM, M.VAL_STR, M.VAL_JSON = 4, 5, 6

M.ptr_t = ffi.typeof("lg_batch_t *")

local function check(rc, what)
  if rc < 0 then
    error(what .. " failed: " .. tostring(rc), 3)
  end
  return rc
end

local ptrbox = ffi.new("lg_batch_t *[1]")
local metabox = ffi.new("lg_meta_t *[1]")

-- Builds a metadata set from a table of key -> string or integer, and
-- optionally hidden string pairs (lg_meta_t.hidden).
function M.meta(kv, hidden)
  check(C.lg_ffi_meta_create(metabox), "lg_ffi_meta_create")
  local m = metabox[0]
  local keys = {}
  for k in pairs(kv) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local v = kv[k]
    if type(v) == "number" then
      check(C.lg_ffi_meta_add_int(m, k, #k, v), "lg_ffi_meta_add_int")
    else
      v = tostring(v)
      check(C.lg_ffi_meta_add_str(m, k, #k, v, #v), "lg_ffi_meta_add_str")
    end
  end
  for k, v in pairs(hidden or {}) do
    check(C.lg_ffi_meta_add_hidden_str(m, k, #k, v, #v), "lg_ffi_meta_add_hidden_str")
  end
  check(C.lg_ffi_meta_seal(m), "lg_ffi_meta_seal")
  return m
end

-- Creates a batch, freed when collected (or by M.destroy). `recs` is a list
-- of bodies or of tables {body=, time_ns=, offset=, end_offset=, flags=,
-- routes=}; opts: meta (table), fingerprint (number), routes (default
-- routes, number, default 1).
function M.new(recs, opts)
  opts = opts or {}
  check(C.lg_ffi_batch_create(4096, ptrbox), "lg_ffi_batch_create")
  local b = ffi.gc(ptrbox[0], C.lg_ffi_batch_destroy)
  if opts.meta then
    local m = M.meta(opts.meta, opts.hidden)
    C.lg_ffi_batch_set_meta(b, m)
    C.lg_ffi_meta_unref(m)
  end
  C.lg_ffi_batch_set_fingerprint(b, opts.fingerprint or 0)
  local off = 0
  for _, r in ipairs(recs or {}) do
    if type(r) == "string" then r = { body = r } end
    local body = r.body or ""
    local o = r.offset or off
    local e = r.end_offset or (o + #body + 1)
    check(C.lg_ffi_batch_add(b, body, #body, r.time_ns or 0, o, e,
                             r.flags or 0, r.routes or opts.routes or 1),
          "lg_ffi_batch_add")
    off = e
  end
  return b
end

function M.destroy(b)
  ffi.gc(b, nil)
  C.lg_ffi_batch_destroy(b)
end

local encbuf, enccap = nil, 0
local outlen = ffi.new("size_t[1]")

-- Record `i` (0-based) of `b` as its JSON output line (without "\n").
function M.encode(b, i)
  while true do
    local rc = C.lg_ffi_batch_encode(b, i, encbuf, enccap, outlen)
    if rc == 0 then
      return ffi.string(encbuf, outlen[0] - 1)
    elseif rc == base.ENOSPC then
      enccap = tonumber(outlen[0]) * 2
      encbuf = ffi.new("char[?]", enccap)
    else
      check(rc, "lg_ffi_batch_encode")
    end
  end
end

-- The C compiler's sizeof (field == "") or offsetof, or nil.
local layout_out = ffi.new("uint64_t[1]")
function M.c_layout(type_name, field)
  field = field or ""
  if C.lg_ffi_abi_layout(type_name, #type_name, field, #field, layout_out) ~= 0 then
    return nil
  end
  return tonumber(layout_out[0])
end

return M
