/*
 * lg_out_s3_internal.h - the `s3` output's private types, shared by its two
 * files and by no one else:
 *   lg_out_s3.c          options, uploading (PutObject, multipart uploads
 *                        with parts in parallel, abort), lifecycle
 *   lg_out_s3_objects.c  records encoded with their key prefix (worker
 *                        threads); a request's records grouped into objects
 *                        with their keys, the keys in the request journal,
 *                        the objects gzipped (loop thread and thread pool)
 */
#ifndef LG_OUT_S3_INTERNAL_H
#define LG_OUT_S3_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/lg_http_client.h"
#include "outputs/lg_output.h"
#include "pipeline/lg_batch.h"

typedef struct s3_conf {
  lg_out_limits_t limits;
  char *bucket, *region, *endpoint, *key;
  int compression; /* 0 none, 1 gzip */
  int64_t multipart_threshold, part_size;
  char *access_key_id, *secret_access_key, *session_token;
  char *ca_file;
  int tls_verify;
  int64_t timeout_ms;
} s3_conf_t;

typedef struct s3_out s3_out_t;
typedef struct s3_obj s3_obj_t;

/* One UploadPart in flight. */
typedef struct s3_part {
  s3_obj_t *ob;
  uint32_t num; /* 1-based */
  lg_http_req_t *hr;
} s3_part_t;

/* One request of the delivery layer, sent as one or more objects. */
typedef struct s3_send {
  s3_out_t *s;
  lg_out_req_t *r;
  s3_obj_t *objs;
  size_t nobjs, pending;
  uv_work_t work;  /* gzip of the objects, on libuv's thread pool */
  int compressing; /* the work is queued or running */
  int journaling;  /* its journal write is in flight */
  struct s3_send *next, *prev;
} s3_send_t;

struct s3_obj {
  s3_send_t *send;
  uint32_t *recs; /* request indexes of its records */
  uint32_t nrecs;
  const char *prefix; /* the key template with its fields expanded */
  size_t plen;
  int written; /* in the bucket before a restart: delivered unsent */
  char *key;
  char *body; /* the object (compressed when compression = gzip) */
  size_t len;
  /* multipart */
  char *upload_id;
  char **etags;
  s3_part_t *parts;
  uint32_t nparts;
  uint32_t next_part; /* 0-based: the next to send */
  uint32_t parts_out; /* in flight */
  int part_failed;    /* no more parts: abort once none is in flight */
  int completing;
  size_t part_size;
  int aborting;
  lg_http_req_t *hr;
  lg_out_result_t result;
  char reason[1024];
};

/* The output type's `encode` (lg_encode_fn, worker threads): appends
 * record `i` of `b` as its JSON line (with `error` as "lugger.error" when
 * not NULL) to out->data and, b not NULL, "<key prefix>\0<time ns>\0<id>"
 * to out->meta: the key template with the record's {field}s expanded ('%'
 * doubled for strftime, {id} kept), the record's time and its stable id.
 * `vconf` is an s3_conf_t. Returns 0, or -ENOMEM with `out` as it was. */
int lg__s3_encode(const void *vconf, const lg_batch_t *b, uint32_t i,
                  const char *error, lg_payload_t *out);

/* Groups the `n` records `recs` of request sd->r by key prefix (their meta
 * up to its first NUL; records submitted as text form one group with the
 * template's fields as "_") into sd->objs (sd->nobjs), each object with its
 * records, its body (the records' bytes, uncompressed) and its key: the
 * prefix with {id} (a hash of its records' ids) and strftime (its first
 * record's time, UTC) applied. Returns 0, or -ENOMEM: with sd->objs NULL
 * when no object was made, else with the objects (some incomplete) for the
 * caller to end. */
int lg__s3_build_objects(s3_send_t *sd, const s3_conf_t *conf,
                         const lg_out_rec_t *recs, uint32_t n);

/* Journals request sd->r with its objects' keys (lg_out_req_journal), or,
 * when the request has a note already (a retry, or made again after a
 * restart), takes each object's key from it and marks objects written
 * before a crash (`written`). Returns 1: the journal write is in flight
 * and `cb` says when it ended (nothing may be uploaded before); 0: upload
 * at once; or -errno: nothing may be uploaded. */
int lg__s3_journal_keys(s3_send_t *sd, lg_out_journaled_cb cb);

/* uv_work_t callback (libuv's thread pool; w->data is the s3_send_t):
 * replaces each unwritten object's body by one gzip member of it, NULL
 * (len 0) when out of memory. Touches only that send's objects. */
void lg__s3_gzip_objects(uv_work_t *w);

#endif
