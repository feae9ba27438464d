/*
 * lg_batch.h - a batch: records of one source, in file order, in one arena.
 *
 * A batch is filled by framing on the loop thread, handed to the worker
 * that owns its source (Lua reads and changes it through lg_ffi_*), then
 * encoded per output and released when every output has acknowledged it.
 *
 * Memory: record bodies, field keys and string values live in `data`
 * (offsets, not pointers, because `data` grows by realloc); records in
 * `recs`; fields in `fields`, chained per record in the order first set.
 * The source's metadata is held once, by reference, in `meta`.
 *
 * Field keys are interned per batch (`keys`): each distinct key is stored
 * once in `data`, preceded by its 32-bit key id and followed by its JSON
 * text `"key":`, and every field with that key points at that one copy.
 * A script sets the same few keys on every record, so setting a field
 * costs a hash lookup instead of a copy and a classification, finding one
 * compares offsets, and the encoder copies the key's JSON instead of
 * escaping it again for every record.
 *
 * The part of the struct up to `meta` crosses the FFI: lua/lugger/ declares
 * the same layout, and a spec checks the two agree.
 */
#ifndef LG_BATCH_H
#define LG_BATCH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/lg_buf.h"
#include "pipeline/lg_meta.h"

/* An interned field key (see above). */
typedef struct lg_key {
  uint32_t off, len;           /* key bytes in data (the id precedes them) */
  uint32_t json_off, json_len; /* `"key":` in data */
  uint32_t hash;
  int32_t shadow; /* what a field with this key replaces: -1 nothing,
                     0 time, 1 body, 2 log.iostream, 3 + k metadata key k */
  /* The newest field with this key (index in fields[], -1 none) and the
   * field_head of the record it was created for: lets a lookup answer
   * without walking the record's fields (lg_batch_fields.c, find_id). May be
   * stale after the fields are reset; find_id checks it. */
  int32_t last_field, last_head;
} lg_key_t;

/* Record flags. */
#define LG_REC_STDERR 0x0001u     /* log.iostream is stderr (else stdout) */
#define LG_REC_HAS_STREAM 0x0002u /* log.iostream is known (CRI, Docker) */
/* A piece of a record over max_record_bytes. */
#define LG_REC_TRUNCATED 0x0004u
#define LG_REC_PARSE_ERROR 0x0008u /* framing failed; body is the raw line */
#define LG_REC_DROPPED 0x0010u     /* a script dropped it; acked, not sent */
#define LG_REC_FAILED 0x0020u      /* a script failed on it: dead-letter */
#define LG_REC_ROUTED 0x0040u      /* routes were set by a script */
#define LG_REC_SHADOWED                                                        \
  0x0080u                          /* a field replaces/removes time, body,     \
                                      log.iostream or a metadata key */
#define LG_REC_FMT_CRI 0x0100u     /* framed from a CRI line */
#define LG_REC_FMT_DOCKER 0x0200u  /* framed from a Docker json-file line */
#define LG_REC_CRI_PARTIAL 0x0400u /* CRI: joined from partial (P) lines */
/* LG_REC_FAILED: the error text is in errs, not the arena (it was full). */
#define LG_REC_ERR_SIDE 0x0800u
/* The flags that describe where a record came from: copies and the
 * records a script splits off keep them. */
#define LG_REC_ORIGIN                                                          \
  (LG_REC_STDERR | LG_REC_HAS_STREAM | LG_REC_TRUNCATED | LG_REC_PARSE_ERROR | \
   LG_REC_FMT_CRI | LG_REC_FMT_DOCKER | LG_REC_CRI_PARTIAL)

/* Field value types. LG_VAL_DELETED is a tombstone: the key was removed. */
typedef enum lg_val_type {
  LG_VAL_DELETED = 0,
  LG_VAL_NULL = 1,
  LG_VAL_BOOL = 2,
  LG_VAL_INT = 3,  /* int64, exact */
  LG_VAL_NUM = 4,  /* double */
  LG_VAL_STR = 5,  /* bytes in data */
  LG_VAL_JSON = 6, /* an array or map, as JSON text in data */
} lg_val_type_t;

typedef struct lg_field {
  uint32_t key_off, key_len; /* key bytes in data */
  int32_t next;              /* next field of the same record, -1 at the end */
  uint32_t type;             /* lg_val_type_t */
  int64_t i;                 /* LG_VAL_INT value; LG_VAL_BOOL 0/1 */
  double d;                  /* LG_VAL_NUM value */
  uint32_t s_off, s_len;     /* LG_VAL_STR / LG_VAL_JSON bytes in data */
} lg_field_t;

typedef struct lg_rec {
  int64_t time_ns;     /* ns since the epoch, UTC */
  uint64_t offset;     /* file offset of the record's first byte */
  uint64_t end_offset; /* file offset just past its last byte */
  uint32_t body_off;   /* body bytes in data */
  uint32_t body_len;
  int32_t field_head; /* first field in fields[], -1 if none */
  int32_t field_tail; /* last field, -1 if none */
  uint64_t routes;    /* bit k: deliver to output k (set by the engine
                         from the pipeline's outputs, or by a script) */
  uint32_t flags;     /* LG_REC_* */
  uint32_t err_off;   /* LG_REC_FAILED: error text in data (in the
                         batch's errs with LG_REC_ERR_SIDE) */
  uint32_t err_len;
  uint32_t key_bloom; /* bit (hash of key % 32) set for each field key:
                        a clear bit means the key is absent */
} lg_rec_t;

typedef struct lg_batch {
  /* --- FFI-visible: keep in sync with lua/lugger/batch.lua --- */
  uint32_t n;   /* records in use */
  uint32_t gen; /* changes whenever the batch is reset or released;
                   Lua record proxies compare it to detect use after
                   the batch is gone */
  lg_rec_t *recs;
  char *data; /* arena */
  uint64_t data_len;
  lg_field_t *fields;
  uint32_t nfields;
  uint32_t source_id;
  const lg_meta_t *meta;
  /* --- C only --- */
  uint32_t recs_cap;
  uint32_t fields_cap;
  uint64_t data_cap;
  lg_key_t *keys; /* interned keys, by id */
  uint32_t nkeys, keys_cap;
  uint32_t *key_slots;        /* open-addressing hash: key id + 1, 0 = empty */
  uint32_t key_slots_cap;     /* a power of two, or 0 */
  uint64_t fingerprint;       /* source file fingerprint, for record ids */
  uint64_t key_epoch;         /* new, process-wide unique, at create and at
                                 each reset: a cache of key ids (lg_regex)
                                 holds while this is unchanged */
  uint64_t checkpoint_offset; /* the file may be checkpointed up to here
                                 once this batch and all before it are acked */
  uint64_t file_key;          /* the source file this batch came from */
  uint64_t lane;              /* the log stream the file belongs to: a file
                                 that replaced another by rotation (or a
                                 copytruncate copy) has its predecessor's
                                 lane; batches of one lane go to one worker,
                                 so a stream keeps its order across files */
  int pipeline;               /* pipeline index */
  int any_worker;             /* 1: any worker may process it (a stateless
                                 pipeline's), so an idle worker may take it
                                 from another's queue (lg_worker.h) */
  int pending;                /* outputs that have not acked yet */
  uint64_t mem_bytes;         /* bytes charged to the memory budget */
  struct lg_payload *out;     /* per output index: encoded records
                                 (lg_payload.h) */
  uint32_t nout;
  uint64_t more_pipelines; /* kubernetes select(): other pipelines (bit
                              = generation 0 pipeline index) that get a
                              copy of this batch; set by the tail */
  struct lg_batch *next;   /* engine queues */
  void *owner;             /* engine bookkeeping */
  /* Deferred framing (lg_framing.h, lg_framer_cut): data[raw_start,
   * data_len) holds whole lines of the file, from file offset raw_offset,
   * that the worker frames into records (lg_framer_frame_deferred) before
   * the scripts run; the records before raw_start were framed already.
   * raw_format is 0 for a batch without such bytes, else the lg_format_t
   * plus 1. Framing those bytes from a fresh framer gives exactly the
   * records the source's own framer would have: they start where it held
   * nothing. raw_flush: the framer is flushed after them (the file's held
   * bytes were flushed, e.g. at rotation or the flush timeout). */
  uint32_t raw_format;
  uint32_t raw_flush;
  uint64_t raw_start;
  uint64_t raw_offset;
  uint64_t raw_max_record; /* the source's max_record_bytes */
  int64_t raw_time_ns;     /* read time: the time of records without one */
  uint32_t framed;         /* records the worker framed from raw bytes */
  /* Error texts of failed records that did not fit in the arena (it is at
   * its 4 GiB): a failed record keeps its reason whatever the arena
   * holds (LG_REC_ERR_SIDE). Emptied at reset. */
  lg_buf_t errs;
} lg_batch_t;

/* Creates an empty batch with room for about `data_hint` bytes.
 * Returns NULL on allocation failure. */
lg_batch_t *lg_batch_create(size_t data_hint);

/* Frees the batch, its output buffers and its reference to meta. NULL-safe. */
void lg_batch_destroy(lg_batch_t *b);

/* Empties the batch for reuse (keeps its memory), bumps gen, drops meta. */
void lg_batch_reset(lg_batch_t *b);

/* The rule of lg_batch_fit: a buffer over LG_BATCH_FIT_MIN bytes that
 * holds less than 1/LG_BATCH_FIT_RATIO of it is cut to what it holds. */
#define LG_BATCH_FIT_MIN (64u << 10)
#define LG_BATCH_FIT_RATIO 8u
/* A cut batch's output buffers keep room for this many times its arena's
 * bytes: the engine's reserve for the encoded records (lg_acks.c). */
#define LG_BATCH_FIT_OUT_KEEP 4u

/* Records a new batch has room for. */
#define LG_BATCH_RECS_INIT 256u

/* Makes the batch hold memory in proportion to what it carries. A batch
 * whose arena (data) is over LG_BATCH_FIT_MIN and less than
 * 1/LG_BATCH_FIT_RATIO full (a quiet file's line or two in a buffer sized
 * for a busy file) gets its arena cut to data_len rounded up to 256 bytes,
 * its record array to n rounded up to 16, and its output buffers cut by
 * the rule (lg_payload_fit), each keeping room for LG_BATCH_FIT_OUT_KEEP
 * times data_len. Otherwise (a full batch, which must not be cut and
 * grown again batch after batch) only output buffers that hold records are cut,
 * each by that rule: a pooled batch's buffers that once held a busy
 * file's JSON, now holding a few records. Records and fields refer to the
 * arena by offset; the caller makes sure nothing holds a pointer into the
 * arena, the record array or the output buffers. A realloc that fails
 * leaves that buffer as it was. Returns the bytes given back. */
size_t lg_batch_fit(lg_batch_t *b);

/* Undoes lg_batch_fit for an empty (reset) batch about to be reused: its
 * arena gets `data_cap` bytes and its record array LG_BATCH_RECS_INIT
 * entries again, empty (new buffers, nothing copied; pages are only
 * touched as they fill), so a busy file taking it does not grow them by
 * doubling. A buffer already that large is kept; when malloc fails the
 * small one is kept (it grows as needed). */
void lg_batch_unfit(lg_batch_t *b, size_t data_cap);

/* Sets the source metadata (takes a reference, drops the old one). */
void lg_batch_set_meta(lg_batch_t *b, const lg_meta_t *meta);

/* Appends `len` bytes to the arena without a record (deferred framing).
 * Returns 0, -ENOMEM or -E2BIG. */
int lg_batch_append_raw(lg_batch_t *b, const char *p, size_t len);

/* Room for `len` more bytes at the end of the arena (data + data_len), for
 * read(2) to fill before data_len is moved over them; NULL when out of
 * memory or past 4 GiB. */
char *lg_batch_room(lg_batch_t *b, size_t len);

/* Appends a record whose body is a copy of `len` bytes at `body`.
 * Returns its index, or -ENOMEM / -E2BIG (arena over 4 GiB). */
int64_t lg_batch_add(lg_batch_t *b, const char *body, size_t len,
                     int64_t time_ns, uint64_t offset, uint64_t end_offset,
                     uint32_t flags);

/* Field setters for record `i`; `key` is `klen` bytes. Setting an existing
 * key replaces its value in place (keeps its position); a new key goes
 * last. Returns 0, -ENOMEM, or -ERANGE for a bad index. */
int lg_batch_set_str(lg_batch_t *b, uint32_t i, const char *key, size_t klen,
                     const char *val, size_t vlen);
int lg_batch_set_json(lg_batch_t *b, uint32_t i, const char *key, size_t klen,
                      const char *json, size_t jlen);
int lg_batch_set_int(lg_batch_t *b, uint32_t i, const char *key, size_t klen,
                     int64_t v);
int lg_batch_set_num(lg_batch_t *b, uint32_t i, const char *key, size_t klen,
                     double v);
int lg_batch_set_bool(lg_batch_t *b, uint32_t i, const char *key, size_t klen,
                      int v);
int lg_batch_set_null(lg_batch_t *b, uint32_t i, const char *key, size_t klen);
/* Removes a key (leaves a tombstone so metadata and builtins stay removed). */
int lg_batch_del(lg_batch_t *b, uint32_t i, const char *key, size_t klen);

/* The id of `key` in the batch's key table, interning it when new: the
 * setters below then skip hashing the key. Ids are valid until the batch
 * is reset. Returns the id, -ENOMEM or -E2BIG. */
int64_t lg_batch_key_id(lg_batch_t *b, const char *key, size_t klen);

/* The setters and lg_batch_del by key id. Return as above, or -EINVAL for
 * an id the batch does not have. */
int lg_batch_set_str_id(lg_batch_t *b, uint32_t i, uint32_t kid,
                        const char *val, size_t vlen);
int lg_batch_set_int_id(lg_batch_t *b, uint32_t i, uint32_t kid, int64_t v);
int lg_batch_set_num_id(lg_batch_t *b, uint32_t i, uint32_t kid, double v);
int lg_batch_set_bool_id(lg_batch_t *b, uint32_t i, uint32_t kid, int v);
int lg_batch_set_null_id(lg_batch_t *b, uint32_t i, uint32_t kid);
int lg_batch_set_json_id(lg_batch_t *b, uint32_t i, uint32_t kid,
                         const char *json, size_t jlen);
int lg_batch_del_id(lg_batch_t *b, uint32_t i, uint32_t kid);

/* Sets field `kid` of record `i`, of type LG_VAL_STR or LG_VAL_JSON (JSON
 * text the caller checked), to `len` bytes already in the
 * arena at offset `off` (a piece of a body or of another field), without
 * copying them: arena bytes never change once written, so the field can
 * share them. Used by the parsers (lg_parse.h). Returns as above, or
 * -EINVAL when the bytes are not inside the arena. */
int lg_batch_set_span_id(lg_batch_t *b, uint32_t i, uint32_t kid, uint32_t type,
                         uint64_t off, uint64_t len);

/* The interned key of a field of `b`. */
static inline const lg_key_t *lg_batch_field_key(const lg_batch_t *b,
                                                 const lg_field_t *f) {
  uint32_t id;
  memcpy(&id, b->data + f->key_off - 4, sizeof id);
  return &b->keys[id];
}

/* Finds the field `key` of record `i`; NULL if the record has none (the
 * caller then looks at builtins and metadata). Tombstones are returned. */
const lg_field_t *lg_batch_find(const lg_batch_t *b, uint32_t i,
                                const char *key, size_t klen);

/* Inserts a new record right after record `after`, whose body is a copy
 * of `len` bytes at `body` (which must not point into b->data: the arena
 * may move). It takes the time, offset, end_offset, routes and the
 * stream/truncated/parse-error/routed flags of record `after`, and no
 * fields; the records after it move up by one. Sharing the source
 * record's offsets keeps checkpoints right: a batch is checkpointed only
 * once acked as a whole. Used to split one record into several (Fluent
 * Bit filters returning an array). Returns the new index (after + 1),
 * -ERANGE for a bad index, -ENOMEM or -E2BIG. */
int64_t lg_batch_insert(lg_batch_t *b, uint32_t after, const char *body,
                        size_t len);

/* Records the script error text (`len` bytes at `msg`) for record `i`
 * and flags it FAILED (it goes to the dead-letter output with the text as
 * its reason). The text goes in the arena, or, when the arena is full (4
 * GiB) or cannot grow, in the batch's errs. Returns 0, -ERANGE for a bad
 * index, or -ENOMEM / -E2BIG when the text could not be kept anywhere:
 * the record is flagged FAILED even then, with an empty text. */
int lg_batch_fail(lg_batch_t *b, uint32_t i, const char *msg, size_t len);

/* The error text of failed record `i` (LG_REC_FAILED): *len gets its
 * length (0 and "" when it has none). */
const char *lg_batch_rec_error(const lg_batch_t *b, uint32_t i, uint32_t *len);

/* True when `key` names a builtin (time, body, log.iostream) or a key of
 * the batch's metadata: setting it must set LG_REC_SHADOWED. */
int lg_batch_key_is_shadowing(const lg_batch_t *b, const char *key,
                              size_t klen);

/* Writes record `i`'s stable id, "<fingerprint as 16 hex digits>:<byte
 * offset of the record in its file, decimal>" (the same for the same
 * record read again after a restart), into `buf` (`cap` bytes,
 * LG_BATCH_REC_ID_MAX are always enough; NUL-terminated). Returns its
 * length, -EINVAL (NULL b or buf), -ERANGE (no record i), or -ENOSPC
 * when `cap` is too small. For
 * outputs (Elasticsearch _id, Kafka keys, S3 keys); Lua reads it through
 * lg_ffi_rec_id. */
#define LG_BATCH_REC_ID_MAX 38
int lg_batch_rec_id(const lg_batch_t *b, uint32_t i, char *buf, size_t cap);

/* A copy of a batch a source just handed on (records and bodies, meta,
 * file identity and lane, checkpoint; no fields, routes or output
 * buffers), e.g.
 * for a further pipeline a source chose. NULL on allocation failure or
 * when the batch already has fields or bytes left to frame (raw_format). */
lg_batch_t *lg_batch_clone(const lg_batch_t *b);

#endif
