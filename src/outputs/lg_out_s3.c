/*
 * lg_out_s3.c - the `s3` output: records as objects of JSON lines (gzip
 * optional) in an S3 bucket or an S3-compatible store.
 *
 * One request of the delivery layer (max_bytes, max_coalescing_delay)
 * becomes one object per distinct key prefix: the key template's record
 * fields ({k8s.namespace.name}) are expanded per record while encoding
 * (worker threads, into the record's side data with its time and id), and
 * send groups the request's records by that expansion. Each object's key
 * then gets the strftime fields of its first record's time and `{id}`, a
 * hash of the ids of the records it holds: the same records always make
 * the same key, and requests are retried frozen (exactly their records),
 * so a retry after a lost answer overwrites its own object instead of
 * adding a second one. Across a crash the same holds through the request
 * journal (lg_out_req_journal; `journal = 1`): each request's records and
 * object keys are in state_dir before anything is uploaded, and after a
 * restart the objects in flight are made again from the same records
 * under the same keys (journal_keys below).
 *
 * Objects below multipart_threshold go in one PutObject; larger ones as a
 * multipart upload (CreateMultipartUpload, UploadPart of part_size bytes,
 * PARALLEL_PARTS of them at a time, CompleteMultipartUpload), aborted
 * (AbortMultipartUpload, once no part is in flight) when any step fails,
 * so no incomplete upload is left behind. An object is visible
 * only once complete (S3's own guarantee), and its records are acked only
 * after PutObject or CompleteMultipartUpload answered 200 without an
 * <Error> body.
 *
 * Signed with lg_aws_sigv4 (x-amz-content-sha256 = the body's SHA-256);
 * credentials from lg_aws_creds (config, environment, shared file, web
 * identity). Follows: Amazon S3 API reference (PutObject,
 * CreateMultipartUpload, UploadPart, CompleteMultipartUpload,
 * AbortMultipartUpload; path-style and virtual-hosted-style requests) and
 * the multipart limits (parts 5 MiB to 5 GiB but the last, at most 10,000).
 *
 * Objects, keys, the journal note and gzip: lg_out_s3_objects.c (shared
 * types in lg_out_s3_internal.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/lg_aws_creds.h"
#include "core/lg_aws_sigv4.h"
#include "core/lg_buf.h"
#include "core/lg_http_client.h"
#include "core/lg_list.h"
#include "core/lg_log.h"
#include "outputs/lg_aws_conn.h"
#include "outputs/lg_out_http_common.h"
#include "outputs/lg_out_s3_internal.h"
#include "outputs/lg_output.h"

#define MIN_PART (5 * 1024 * 1024)
#define MAX_PARTS 10000
/* Parts of one object uploaded at once: a part is one HTTP request, so one
 * at a time leaves a large object's upload waiting on each round trip. */
#define PARALLEL_PARTS 4

static int check_part_size(const lg_optval_t *v, char *err, size_t errlen) {
  if (v->i < MIN_PART) {
    snprintf(err, errlen, "at least 5MiB (S3's smallest part but the last)");
    return -1;
  }
  return 0;
}

static const lg_option_t s3_options[] = {
    {.name = "bucket",
     .type = LG_OPT_STRING,
     .required = 1,
     .doc = "Bucket name.",
     .offset = offsetof(s3_conf_t, bucket)},
    LG_AWS_CONN_REGION_OPTION(s3_conf_t),
    {.name = "endpoint",
     .type = LG_OPT_STRING,
     .doc = "URL of an S3-compatible store (\"http://minio:9000\"), used "
            "path-style; default: https://<bucket>.s3.<region>.amazonaws.com "
            "(.amazonaws.com.cn in the China regions).",
     .offset = offsetof(s3_conf_t, endpoint)},
    {.name = "key",
     .type = LG_OPT_STRING,
     .def = "logs/%Y/%m/%d/%H/{id}.json.gz",
     .doc = "Object key template: {field} from the record, strftime codes "
            "(UTC) from the first record's time, {id} from the object's "
            "records (a retry overwrites its own object).",
     .offset = offsetof(s3_conf_t, key)},
    {.name = "compression",
     .type = LG_OPT_ENUM,
     .def = "gzip",
     .choices = "none|gzip",
     .doc = "gzip: the object is one gzip member (Content-Type "
            "application/gzip); none: application/x-ndjson.",
     .offset = offsetof(s3_conf_t, compression)},
    {.name = "multipart_threshold",
     .type = LG_OPT_BYTES,
     .def = "16MiB",
     .check = lg_opt_check_positive,
     .doc = "Objects of this size or larger (after compression) are sent as "
            "a multipart upload.",
     .offset = offsetof(s3_conf_t, multipart_threshold)},
    {.name = "part_size",
     .type = LG_OPT_BYTES,
     .def = "8MiB",
     .check = check_part_size,
     .doc = "Size of a multipart upload's parts (at least 5MiB; raised when "
            "an object would need more than 10,000 parts).",
     .offset = offsetof(s3_conf_t, part_size)},
    LG_AWS_CONN_OPTIONS(s3_conf_t),
    {.name = "timeout",
     .type = LG_OPT_DURATION,
     .def = "120s",
     .check = lg_opt_check_positive,
     .doc = "Time for one HTTP request (a PutObject or one part) and its "
            "answer; then the object is retried.",
     .offset = offsetof(s3_conf_t, timeout_ms)},
    LG_OUT_DELIVERY_OPTIONS(s3_conf_t, "1000000", "8MiB", "60s", "2", "0"),
    {.name = NULL},
};

/* ---- uploading (loop thread) ----------------------------------------------
 */

struct s3_out {
  lg_output_t *o;
  const s3_conf_t *conf;
  lg_aws_conn_t aws;
  char path_prefix[300]; /* "/<bucket>" path-style, "" virtual-hosted */
  s3_send_t *sends;      /* in flight */
};

static void obj_step(s3_obj_t *ob);

static void send_finish(s3_send_t *sd) {
  s3_out_t *s = sd->s;
  lg_out_result_t worst = LG_OUT_DELIVERED;
  const char *why = NULL;
  for (size_t g = 0; g < sd->nobjs; g++) {
    s3_obj_t *ob = &sd->objs[g];
    for (uint32_t k = 0; k < ob->nrecs; k++)
      lg_out_req_set(sd->r, ob->recs[k], ob->result,
                     ob->result == LG_OUT_DELIVERED ? NULL : ob->reason);
    if (ob->result != LG_OUT_DELIVERED)
      worst = ob->result, why = ob->reason;
  }
  /* The request's end may close the output (the last one at abandon or
   * drain) and free `s`: everything of `sd` is undone first. */
  lg_out_req_t *r = sd->r;
  char reason[1024];
  snprintf(reason, sizeof reason, "%s", why ? why : "");
  LG_LIST_UNLINK(s->sends, sd);
  for (size_t g = 0; g < sd->nobjs; g++) {
    s3_obj_t *ob = &sd->objs[g];
    free(ob->recs);
    free(ob->key);
    free(ob->body);
    free(ob->upload_id);
    for (uint32_t p = 0; ob->etags && p < ob->nparts; p++)
      free(ob->etags[p]);
    free(ob->etags);
    free(ob->parts);
  }
  free(sd->objs);
  free(sd);
  lg_out_req_done(r, worst, why ? reason : NULL);
}

static void obj_done(s3_obj_t *ob, lg_out_result_t res, const char *reason) {
  ob->result = res;
  if (reason && reason != ob->reason)
    snprintf(ob->reason, sizeof ob->reason, "%s", reason);
  ob->hr = NULL;
  s3_send_t *sd = ob->send;
  if (--sd->pending == 0)
    send_finish(sd);
}

static void on_answer(void *ud, lg_http_req_t *hr,
                      const lg_http_response_t *res);

/* Appends to a rejection's `reason` the bucket's region when S3 names one
 * other than the output's: a wrong `region` is answered 301
 * PermanentRedirect (another region's endpoint; the region in the
 * x-amz-bucket-region header, the endpoint at the end of the body) or 400
 * AuthorizationHeaderMalformed (<Region>), and the reason quotes only the
 * body's first bytes (Amazon S3 API reference, "Error responses"). */
static void add_bucket_region(const s3_out_t *s, const lg_http_req_t *hr,
                              const lg_http_response_t *res, char *reason,
                              size_t cap) {
  char *in_body = NULL;
  const char *r = lg_http_response_header(hr, "x-amz-bucket-region");
  if (r == NULL || *r == '\0')
    r = in_body = lg_aws_xml_text(res->body, res->body_len, "Region");
  if (r != NULL && *r != '\0' && strcmp(r, s->aws.region) != 0) {
    size_t n = strlen(reason);
    snprintf(reason + n, cap - n,
             " (the bucket is in region %s; the output's region is %s)", r,
             s->aws.region);
  }
  free(in_body);
}

/* Signs and starts one S3 request for object `ob`, answered to
 * cb(ud, ...). NULL, with `why`, when it cannot be started. */
static lg_http_req_t *sign_and_send(s3_obj_t *ob, const char *method,
                                    const lg_sigv4_param_t *q, size_t nq,
                                    const char *ctype, const char *body,
                                    size_t len, lg_http_done_cb cb, void *ud,
                                    char *why, size_t whylen) {
  s3_out_t *s = ob->send->s;
  char path[2048];
  snprintf(path, sizeof path, "%s/%s", s->path_prefix, ob->key);
  lg_aws_conn_req_t r = {0};
  r.method = method;
  r.path = path;
  r.query = q;
  r.nquery = nq;
  r.service = "s3";
  r.content_type = ctype;
  r.body = body;
  r.body_len = len;
  r.content_sha256_header = 1;
  return lg_aws_conn_send(&s->aws, &r, cb, ud, why, whylen);
}

/* Sends one S3 request for object `ob` (answered to on_answer); one that
 * cannot be started ends the object (retried). */
static void obj_request(s3_obj_t *ob, const char *method,
                        const lg_sigv4_param_t *q, size_t nq, const char *ctype,
                        const char *body, size_t len) {
  char why[512];
  ob->hr = sign_and_send(ob, method, q, nq, ctype, body, len, on_answer, ob,
                         why, sizeof why);
  if (!ob->hr)
    obj_done(ob, LG_OUT_RETRY, why);
}

static void on_part_answer(void *ud, lg_http_req_t *hr,
                           const lg_http_response_t *res);

/* A part failed (or could not be sent): no more parts go; the upload is
 * aborted once none is in flight. The first failure is the object's. */
static void part_failed(s3_obj_t *ob, lg_out_result_t k, const char *why) {
  if (ob->part_failed)
    return;
  ob->part_failed = 1;
  ob->result = k == LG_OUT_SPLIT ? LG_OUT_RETRY : k;
  snprintf(ob->reason, sizeof ob->reason, "%s", why);
}

static const char *ctype_of(const s3_out_t *s) {
  return s->conf->compression == 1 ? "application/gzip"
                                   : "application/x-ndjson";
}

/* Sends the next step of object `ob`: PutObject; or Create, the parts,
 * Complete; or Abort after a failure. */
static void obj_step(s3_obj_t *ob) {
  s3_out_t *s = ob->send->s;
  if (ob->aborting) {
    lg_sigv4_param_t q[] = {{"uploadId", ob->upload_id}};
    obj_request(ob, "DELETE", q, 1, NULL, NULL, 0);
    return;
  }
  if (ob->len < (size_t)s->conf->multipart_threshold) {
    obj_request(ob, "PUT", NULL, 0, ctype_of(s), ob->body, ob->len);
    return;
  }
  if (!ob->upload_id) {
    lg_sigv4_param_t q[] = {{"uploads", ""}};
    obj_request(ob, "POST", q, 1, ctype_of(s), NULL, 0);
    return;
  }
  /* The parts, PARALLEL_PARTS at a time. */
  while (!ob->part_failed && ob->parts_out < PARALLEL_PARTS &&
         ob->next_part < ob->nparts) {
    uint32_t p = ob->next_part++;
    size_t off = (size_t)p * ob->part_size;
    size_t n = ob->len - off < ob->part_size ? ob->len - off : ob->part_size;
    char num[16], why[512];
    snprintf(num, sizeof num, "%u", p + 1);
    lg_sigv4_param_t q[] = {{"partNumber", num}, {"uploadId", ob->upload_id}};
    s3_part_t *pt = &ob->parts[p];
    pt->ob = ob;
    pt->num = p + 1;
    pt->hr =
        sign_and_send(ob, "PUT", q, 2, "application/octet-stream",
                      ob->body + off, n, on_part_answer, pt, why, sizeof why);
    if (!pt->hr)
      part_failed(ob, LG_OUT_RETRY, why);
    else
      ob->parts_out++;
  }
  if (ob->parts_out > 0)
    return; /* the next step when they are answered */
  if (ob->part_failed) {
    ob->aborting = 1;
    obj_step(ob);
    return;
  }
  /* CompleteMultipartUpload: the parts and their ETags, in order. */
  lg_buf_t x = LG_BUF_INIT;
  int e = lg_buf_appendf(&x, "<CompleteMultipartUpload xmlns=\"http://s3."
                             "amazonaws.com/doc/2006-03-01/\">");
  for (uint32_t p = 0; p < ob->nparts; p++)
    e |= lg_buf_appendf(&x,
                        "<Part><PartNumber>%u</PartNumber><ETag>%s</ETag>"
                        "</Part>",
                        p + 1, ob->etags[p]);
  e |= lg_buf_appendf(&x, "</CompleteMultipartUpload>");
  if (e) {
    lg_buf_free(&x);
    obj_done(ob, LG_OUT_RETRY, "out of memory");
    return;
  }
  /* The body must outlive the request: keep it in place of the object's
   * (no longer needed once every part is sent). */
  free(ob->body);
  ob->body = x.data;
  ob->len = x.len;
  ob->completing = 1;
  lg_sigv4_param_t q[] = {{"uploadId", ob->upload_id}};
  obj_request(ob, "POST", q, 1, "application/xml", ob->body, ob->len);
}

static void on_answer(void *ud, lg_http_req_t *hr,
                      const lg_http_response_t *res) {
  s3_obj_t *ob = ud;
  s3_out_t *s = ob->send->s;
  ob->hr = NULL;
  char reason[1024];
  lg_out_result_t k = lg_out_http_classify(res, reason, sizeof reason);
  if (k == LG_OUT_REJECTED)
    add_bucket_region(s, hr, res, reason, sizeof reason);
  /* CompleteMultipartUpload may answer 200 and fail in the body. */
  if (k == LG_OUT_DELIVERED && memmem(res->body, res->body_len, "<Error>", 7)) {
    k = LG_OUT_RETRY;
    char *code = lg_aws_xml_text(res->body, res->body_len, "Code");
    snprintf(reason, sizeof reason, "S3 error in a 200 answer: %s",
             code ? code : "?");
    free(code);
  }
  if (ob->aborting) {
    /* The abort's own result does not change the object's: it is retried
     * as a whole; a failed abort leaves an upload a lifecycle rule
     * removes (logged). */
    if (k != LG_OUT_DELIVERED)
      lg_log_warn("output.s3", "%s: AbortMultipartUpload of %s failed: %s",
                  s->o->name, ob->key, reason);
    obj_done(ob, ob->result, ob->reason);
    return;
  }
  if (k != LG_OUT_DELIVERED) {
    if (res->status == 0 || res->status >= 500)
      lg_http_req_host_failed(hr);
    if (ob->upload_id) {
      ob->result = k == LG_OUT_SPLIT ? LG_OUT_RETRY : k;
      snprintf(ob->reason, sizeof ob->reason, "%s", reason);
      ob->aborting = 1;
      obj_step(ob);
      return;
    }
    obj_done(ob, k == LG_OUT_SPLIT ? LG_OUT_RETRY : k, reason);
    return;
  }
  if (ob->len < (size_t)s->conf->multipart_threshold && !ob->upload_id) {
    obj_done(ob, LG_OUT_DELIVERED, NULL); /* PutObject */
    return;
  }
  if (!ob->upload_id) { /* CreateMultipartUpload */
    ob->upload_id = lg_aws_xml_text(res->body, res->body_len, "UploadId");
    if (!ob->upload_id) {
      obj_done(ob, LG_OUT_RETRY, "CreateMultipartUpload: no UploadId");
      return;
    }
    ob->etags = calloc(ob->nparts, sizeof *ob->etags);
    ob->parts = calloc(ob->nparts, sizeof *ob->parts);
    if (!ob->etags || !ob->parts)
      part_failed(ob, LG_OUT_RETRY, "out of memory");
    obj_step(ob);
    return;
  }
  obj_done(ob, LG_OUT_DELIVERED, NULL); /* CompleteMultipartUpload */
}

static void on_part_answer(void *ud, lg_http_req_t *hr,
                           const lg_http_response_t *res) {
  s3_part_t *pt = ud;
  s3_obj_t *ob = pt->ob;
  pt->hr = NULL;
  ob->parts_out--;
  char reason[1024];
  lg_out_result_t k = lg_out_http_classify(res, reason, sizeof reason);
  if (k != LG_OUT_DELIVERED) {
    if (res->status == 0 || res->status >= 500)
      lg_http_req_host_failed(hr);
    part_failed(ob, k, reason);
  } else {
    const char *etag = lg_http_response_header(hr, "ETag");
    ob->etags[pt->num - 1] = etag ? strdup(etag) : NULL;
    if (!ob->etags[pt->num - 1])
      part_failed(ob, LG_OUT_RETRY, "UploadPart: no ETag");
  }
  obj_step(ob); /* more parts, or Complete, or Abort */
}

/* Ends a send whose objects were not started: every record RETRY. */
static void fail_all(s3_send_t *sd, const char *why) {
  for (size_t g = 0; g < sd->nobjs; g++) {
    sd->objs[g].result = LG_OUT_RETRY;
    snprintf(sd->objs[g].reason, sizeof sd->objs[g].reason, "%s", why);
  }
  send_finish(sd);
}

/* Plans the parts of the objects at the multipart threshold and starts
 * every object. One may end at once (no credentials yet): the extra count
 * keeps the send alive until all are started. */
static void start_objects(s3_send_t *sd) {
  s3_out_t *s = sd->s;
  for (size_t g = 0; g < sd->nobjs; g++) {
    s3_obj_t *ob = &sd->objs[g];
    if (ob->len >= (size_t)s->conf->multipart_threshold) {
      size_t ps = (size_t)s->conf->part_size;
      if ((ob->len + ps - 1) / ps > MAX_PARTS)
        ps = (ob->len + MAX_PARTS - 1) / MAX_PARTS;
      ob->part_size = ps;
      ob->nparts = (uint32_t)((ob->len + ps - 1) / ps);
    }
  }
  sd->pending = sd->nobjs + 1;
  for (size_t g = 0; g < sd->nobjs; g++) {
    if (sd->objs[g].written)
      obj_done(&sd->objs[g], LG_OUT_DELIVERED, NULL);
    else
      obj_step(&sd->objs[g]);
  }
  if (--sd->pending == 0)
    send_finish(sd);
}

static void gz_after(uv_work_t *w, int status) {
  s3_send_t *sd = w->data;
  sd->compressing = 0;
  if (status != 0 || sd->s->aws.http == NULL) {
    fail_all(sd, "cancelled at shutdown");
    return;
  }
  for (size_t g = 0; g < sd->nobjs; g++)
    if (!sd->objs[g].body) {
      fail_all(sd, "out of memory");
      return;
    }
  start_objects(sd);
}

/* Compresses (on the thread pool) or starts the objects of `sd`. */
static void upload(s3_send_t *sd) {
  if (sd->s->conf->compression == 1) {
    /* Compressing megabytes takes tens of milliseconds: not on the loop,
     * which serves every output and source. */
    sd->compressing = 1;
    sd->work.data = sd;
    if (uv_queue_work(sd->s->o->loop, &sd->work, lg__s3_gzip_objects,
                      gz_after) == 0)
      return;
    sd->compressing = 0;
    fail_all(sd, "could not queue the compression");
    return;
  }
  start_objects(sd);
}

/* The journal write of request `r` ended: upload its objects, or nothing
 * when the write failed (the request is retried and journaled again). */
static void journaled(lg_out_req_t *r, int status) {
  s3_send_t *sd = r->impl;
  sd->journaling = 0;
  if (status != 0) {
    char why[160];
    snprintf(why, sizeof why, "cannot write the request journal: %s",
             strerror(-status));
    fail_all(sd, why);
  } else if (sd->s->aws.http == NULL) {
    fail_all(sd, "cancelled at shutdown");
  } else {
    upload(sd);
  }
}

static void s3_send(lg_output_t *o, lg_out_req_t *r) {
  s3_out_t *s = o->impl;
  s3_send_t *sd = calloc(1, sizeof *sd);
  int oom = sd == NULL;
  if (sd) {
    sd->s = s;
    sd->r = r;
    oom = lg__s3_build_objects(sd, s->conf, lg_out_req_recs(r), r->n) != 0;
  }
  if (oom && (!sd || !sd->objs)) {
    free(sd);
    lg_out_req_done(r, LG_OUT_RETRY, "out of memory");
    return;
  }
  LG_LIST_PUSH(s->sends, sd);
  if (oom) {
    fail_all(sd, "out of memory");
    return;
  }
  r->impl = sd;
  int rc = lg__s3_journal_keys(sd, journaled);
  if (rc < 0) {
    fail_all(sd, "cannot write the request journal: out of memory");
    return;
  }
  if (rc > 0) {
    sd->journaling = 1; /* journaled() goes on */
    return;
  }
  upload(sd);
}

/* lg_output_type_t.check. */
static int s3_check(const char *name, const void *vconf, char *err,
                    size_t errlen) {
  const s3_conf_t *c = vconf;
  if (!c->bucket || !*c->bucket || strchr(c->bucket, '/')) {
    snprintf(err, errlen, "outputs.%s.bucket: a bucket name is needed", name);
    return -EINVAL;
  }
  if (!c->key || !*c->key || c->key[0] == '/') {
    snprintf(err, errlen,
             "outputs.%s.key: a key template that does not start with '/'",
             name);
    return -EINVAL;
  }
  return 0;
}

static int s3_init(lg_output_t *o, const void *vconf, char *err,
                   size_t errlen) {
  const s3_conf_t *c = vconf;
  s3_out_t *s = calloc(1, sizeof *s);
  if (!s)
    return -ENOMEM;
  s->o = o;
  s->conf = c;
  if (c->endpoint && *c->endpoint)
    snprintf(s->path_prefix, sizeof s->path_prefix, "/%s", c->bucket);
  char host_prefix[300]; /* virtual-hosted-style: the bucket's own host */
  snprintf(host_prefix, sizeof host_prefix, "%s.s3", c->bucket);
  lg_aws_conn_conf_t ac = LG_AWS_CONN_CONF(c);
  int rc = lg_aws_conn_open(&s->aws, o->loop, o->name, host_prefix, &ac, err,
                            errlen);
  if (rc != 0) {
    free(s);
    return rc;
  }
  o->impl = s;
  return 0;
}

/* A multipart upload cut by the cancel is neither completed nor aborted
 * (the client that would abort it is closing): S3 keeps its parts, and
 * bills them, until a lifecycle rule (AbortIncompleteMultipartUpload)
 * removes them. Logged with its key and upload id, so it can be found. */
static void left_incomplete(const s3_out_t *s, const s3_obj_t *ob) {
  char comp[128];
  snprintf(comp, sizeof comp, "output.%s", s->o->name);
  lg_log_warn(comp,
              "shutdown timeout: multipart upload of %s (upload id %s) left "
              "incomplete, not aborted: its parts stay in the bucket until a "
              "lifecycle rule with AbortIncompleteMultipartUpload removes "
              "them; the object is sent again whole at the next start",
              ob->key, ob->upload_id);
}

/* Ends every object in flight as RETRY (the client is being closed; its
 * answers no longer come). */
static void s3_cancel(lg_output_t *o) {
  s3_out_t *s = o->impl;
  lg_aws_conn_cancel(&s->aws);
  for (s3_send_t *sd = s->sends, *next; sd; sd = next) {
    next = sd->next;
    if (sd->compressing) {
      /* Ended by gz_after (ECANCELED, or after its work ran). */
      uv_cancel((uv_req_t *)&sd->work);
      continue;
    }
    if (sd->journaling)
      continue; /* ended by journaled() once its write is done */
    for (size_t g = 0; g < sd->nobjs; g++) {
      if (sd->objs[g].hr || sd->objs[g].parts_out > 0) {
        if (sd->objs[g].upload_id && !sd->objs[g].completing)
          left_incomplete(s, &sd->objs[g]);
        sd->objs[g].hr = NULL;
        sd->objs[g].parts_out = 0;
        sd->objs[g].result = LG_OUT_RETRY;
        snprintf(sd->objs[g].reason, sizeof sd->objs[g].reason,
                 "cancelled at shutdown");
      }
    }
    sd->pending = 0;
    send_finish(sd);
  }
}

static void s3_close(lg_output_t *o) {
  s3_out_t *s = o->impl;
  lg_aws_conn_close(&s->aws, o);
}

const lg_output_type_t lg__output_s3 = {
    .name = "s3",
    .doc = "Writes objects of JSON lines (gzip optional) to Amazon S3 or an "
           "S3-compatible store; a retried object overwrites its own key.",
    .options = s3_options,
    .conf_size = sizeof(s3_conf_t),
    .rejects = 1,
    .encode = lg__s3_encode,
    .check = s3_check,
    .init = s3_init,
    .send = s3_send,
    .frozen_retries = 1,
    .journal = 1,
    .cancel = s3_cancel,
    .close = s3_close,
};
