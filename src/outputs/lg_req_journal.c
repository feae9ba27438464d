/*
 * lg_req_journal.c - the request journal (lg_req_journal.h): a JSON file
 * per output name, rewritten whole (temp file, fsync, rename) when entries
 * are added; it holds at most max_in_flight entries per instance, so a
 * rewrite is small. The file is encoded on the loop thread (a snapshot)
 * and written by libuv's threadpool, one write at a time (lg_atomic_file.h):
 * entries added during a write wait for the next one, which starts as soon
 * as it ends.
 *
 * {"version":1,"requests":[{"id":7,"note":"...",
 *   "runs":[["<fingerprint hex>",<first offset>,<last offset>,<count>]],
 *   "acked":[<index of a run whose records were acked>]}]}
 * ("acked" only when there are some; a reader that does not know it waits
 * for those runs as before.)
 */
#include "outputs/lg_req_journal.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/lg_atomic_file.h"
#include "core/lg_buf.h"
#include "core/lg_json.h"
#include "core/lg_log.h"
#include "core/lg_util.h"

#define RJ_VERSION 1
#define RJ_MAX_FILE (64u << 20)
/* Writes that keep failing (a full or failing state_dir) are logged when
 * they start failing, then at most this often, s: each retry of each
 * request writes again. */
#define RJ_FAIL_LOG_S 60

/* An lg_rj_add waiting for its entry to be written. */
typedef struct rj_waiter {
  uint64_t id;
  lg_rj_done_cb cb;
  void *ud;
  int in_write; /* its entry is in the write in flight */
} rj_waiter_t;

struct lg_rj {
  lg_rj_t *next; /* the registry of open journals */
  uv_loop_t *loop;
  char *dir, *name, *file;
  int refs;
  lg_rj_entry_t *e;
  size_t n, cap;
  uint64_t next_id;
  lg_rj_entry_t *found; /* at the first open, until taken */
  size_t nfound;
  /* Changes to the entries so far, and how many of them the file holds:
   * they differ while removals wait for the next write. */
  uint64_t gen, saved_gen;
  lg_atomic_file_t *af; /* writes the file on the threadpool */
  uint64_t write_gen;   /* the changes the last write started holds */
  rj_waiter_t *wait;
  size_t nwait, wait_cap;
  int closing; /* the last close runs: the writes left end within it */
  /* Writes failed in a row (logged at the first, then every
   * RJ_FAIL_LOG_S), and when that was last logged. */
  uint64_t fails;
  time_t fail_logged;
};

static lg_rj_t *open_journals;

void lg_rj_entry_free(lg_rj_entry_t *e) {
  free(e->runs);
  free(e->note);
  e->runs = NULL;
  e->note = NULL;
}

static int entry_copy(lg_rj_entry_t *dst, const lg_rj_entry_t *src) {
  *dst = *src;
  dst->runs = malloc((src->nruns ? src->nruns : 1) * sizeof *dst->runs);
  dst->note = lg_util_strdup(src->note ? src->note : "");
  if (dst->runs == NULL || dst->note == NULL) {
    lg_rj_entry_free(dst);
    return -ENOMEM;
  }
  memcpy(dst->runs, src->runs, src->nruns * sizeof *dst->runs);
  return 0;
}

/* ---- the file ------------------------------------------------------------ */

/* Whether `v` is a number from `lo` to `hi` that converts without loss of
 * its integer part (a file's numbers, which lugger wrote as integers; a
 * cast of one out of range is undefined). */
static int num_in(const cJSON *v, double lo, double hi) {
  return cJSON_IsNumber(v) && v->valuedouble >= lo && v->valuedouble <= hi;
}

static int parse_run(const cJSON *a, lg_rj_run_t *r) {
  if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != 4)
    return -1;
  const cJSON *fp = cJSON_GetArrayItem(a, 0), *f = cJSON_GetArrayItem(a, 1),
              *l = cJSON_GetArrayItem(a, 2), *c = cJSON_GetArrayItem(a, 3);
  /* Offsets below 2^64 (0x1p64 itself is not a uint64_t). */
  if (!cJSON_IsString(fp) || !num_in(f, 0, 0x1p64 - 0x1p11) ||
      !num_in(l, 0, 0x1p64 - 0x1p11) || !num_in(c, 1, UINT32_MAX))
    return -1;
  r->fp = strtoull(fp->valuestring, NULL, 16);
  r->first = (uint64_t)f->valuedouble;
  r->last = (uint64_t)l->valuedouble;
  r->count = (uint32_t)c->valuedouble;
  return 0;
}

/* Parses the file's text into j->found. 0, or -1 if it is not a journal,
 * with why in `why` (where it stops being one). */
static int parse(lg_rj_t *j, const char *text, size_t len, char *why,
                 size_t whylen) {
  const char *stop = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(text, len, &stop, 0);
  const cJSON *ver = cJSON_GetObjectItemCaseSensitive(root, "version");
  const cJSON *reqs = cJSON_GetObjectItemCaseSensitive(root, "requests");
  int rc = -1;
  if (root == NULL) {
    snprintf(why, whylen, "not valid JSON (at byte %zu of %zu)",
             stop != NULL && stop >= text ? (size_t)(stop - text) : 0, len);
    goto out;
  }
  if (!cJSON_IsNumber(ver) || ver->valuedouble != RJ_VERSION ||
      !cJSON_IsArray(reqs)) {
    snprintf(why, whylen, "not a version %d request journal", RJ_VERSION);
    goto out;
  }
  size_t n = (size_t)cJSON_GetArraySize(reqs);
  j->found = calloc(n ? n : 1, sizeof *j->found);
  if (j->found == NULL)
    goto out;
  const cJSON *o;
  cJSON_ArrayForEach(o, reqs) {
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
    const cJSON *note = cJSON_GetObjectItemCaseSensitive(o, "note");
    const cJSON *runs = cJSON_GetObjectItemCaseSensitive(o, "runs");
    /* Ids are below 2^53 (one per request: a count), and unique: two
     * requests of one id would be settled as one. */
    snprintf(why, whylen, "request %zu of %zu is malformed", j->nfound, n);
    if (!num_in(id, 1, 0x1p53) || !cJSON_IsString(note) ||
        !cJSON_IsArray(runs) || cJSON_GetArraySize(runs) < 1)
      goto out;
    for (size_t k = 0; k < j->nfound; k++)
      if (j->found[k].id == (uint64_t)id->valuedouble)
        goto out;
    lg_rj_entry_t *e = &j->found[j->nfound++];
    e->id = (uint64_t)id->valuedouble;
    e->note = lg_util_strdup(note->valuestring);
    e->runs = calloc((size_t)cJSON_GetArraySize(runs), sizeof *e->runs);
    if (e->note == NULL || e->runs == NULL)
      goto out;
    const cJSON *a;
    cJSON_ArrayForEach(a, runs) {
      if (parse_run(a, &e->runs[e->nruns]) != 0)
        goto out;
      e->left += e->runs[e->nruns++].count;
    }
    /* Not knowing a run was acked only makes a restart wait for it: an
     * index out of range is ignored. */
    const cJSON *acked = cJSON_GetObjectItemCaseSensitive(o, "acked");
    if (cJSON_IsArray(acked)) {
      cJSON_ArrayForEach(a, acked) {
        if (cJSON_IsNumber(a) && a->valuedouble >= 0 &&
            a->valuedouble < e->nruns)
          e->runs[(uint32_t)a->valuedouble].acked = 1;
      }
    }
    if (e->id >= j->next_id)
      j->next_id = e->id + 1;
  }
  rc = 0;
out:
  cJSON_Delete(root);
  return rc;
}

/* The journal's entries as the file's text, into `b`. 0 or -ENOMEM. */
static int encode(const lg_rj_t *j, lg_buf_t *b) {
  int e = lg_buf_appendf(b, "{\"version\":%d,\"requests\":[", RJ_VERSION);
  for (size_t i = 0; i < j->n && e == 0; i++) {
    const lg_rj_entry_t *x = &j->e[i];
    e |= lg_buf_appendf(b, "%s{\"id\":%" PRIu64 ",\"note\":", i ? "," : "",
                        x->id);
    e |= lg_json_append_string(b, x->note, strlen(x->note));
    e |= lg_buf_appendf(b, ",\"runs\":[");
    for (uint32_t k = 0; k < x->nruns && e == 0; k++)
      e |= lg_buf_appendf(
          b, "%s[\"%016" PRIx64 "\",%" PRIu64 ",%" PRIu64 ",%u]", k ? "," : "",
          x->runs[k].fp, x->runs[k].first, x->runs[k].last, x->runs[k].count);
    e |= lg_buf_appendf(b, "]");
    int any = 0;
    for (uint32_t k = 0; k < x->nruns && e == 0; k++)
      if (x->runs[k].acked)
        e |= lg_buf_appendf(b, "%s%u", any++ ? "," : ",\"acked\":[", k);
    e |= lg_buf_appendf(b, any ? "]}" : "}");
  }
  e |= lg_buf_appendf(b, "]}\n");
  return e != 0 ? -ENOMEM : 0;
}

/* ---- writes on the threadpool ------------------------------------------ */

static lg_rj_entry_t *find(const lg_rj_t *j, uint64_t id) {
  for (size_t i = 0; i < j->n; i++)
    if (j->e[i].id == id)
      return &j->e[i];
  return NULL;
}

/* Removes entry `id` from memory (0 if there is none); written later. */
static int forget(lg_rj_t *j, uint64_t id) {
  lg_rj_entry_t *e = find(j, id);
  if (e == NULL)
    return 0;
  lg_rj_entry_free(e);
  *e = j->e[--j->n];
  j->gen++;
  return 1;
}

/* The snapshot of a write (its lg_atomic_file_fill_cb): every waiter is
 * in it, and so is every change so far. */
static int write_fill(void *ud, lg_buf_t *b) {
  lg_rj_t *j = ud;
  for (size_t i = 0; i < j->nwait; i++)
    j->wait[i].in_write = 1;
  j->write_gen = j->gen;
  return encode(j, b);
}

/* Ends the first `n` waiters (those whose entries were in the write that
 * ended with `rc`: the oldest, since later adds are appended): their
 * callbacks run. The waiters left (added during the write or in the
 * callbacks) asked for the next write, which starts once they ran. */
static void end_waiters(lg_rj_t *j, size_t n, int rc) {
  /* A failed write: its entries leave the journal (the file on disk is
   * the one before, without them); their requests are not sent and are
   * journaled again when retried. */
  for (size_t i = 0; rc != 0 && i < n; i++)
    forget(j, j->wait[i].id);
  /* A callback may add (coalesced into the next write) or drop the last
   * reference (then closed below, once the callbacks ran). */
  j->refs++;
  for (; n > 0; n--) {
    rj_waiter_t x = j->wait[0];
    memmove(&j->wait[0], &j->wait[1], --j->nwait * sizeof *j->wait);
    x.cb(x.ud, x.id, rc);
  }
  lg_rj_close(j);
}

/* A write ended (its lg_atomic_file_done_cb): its entries get its result.
 * At the last close, the entries added after it started get -ECANCELED
 * (not written) and leave the journal. */
static void write_done(void *ud, int rc, const char *step) {
  lg_rj_t *j = ud;
  size_t n = 0;
  while (n < j->nwait && j->wait[n].in_write)
    n++;
  time_t now = time(NULL);
  if (rc == 0) {
    j->saved_gen = j->write_gen;
    if (j->fails > 0)
      lg_log_info("output",
                  "request journal %s: written again after %llu failed "
                  "writes",
                  j->file, (unsigned long long)j->fails);
    j->fails = 0;
  } else if (++j->fails > 1 && now - j->fail_logged < RJ_FAIL_LOG_S) {
    /* Said when the failures started: not once per retry. */
  } else if (n > 0) {
    j->fail_logged = now;
    lg_log_error("output",
                 "request journal %s: %s: %s; the %zu request(s) written "
                 "with it are not sent and are retried (%llu failed writes "
                 "in a row; said again at most every %d s)",
                 j->file, step, strerror(-rc), n, (unsigned long long)j->fails,
                 RJ_FAIL_LOG_S);
  } else {
    j->fail_logged = now;
    lg_log_warn("output",
                "%s: %s: %s (requests already settled may be waited for "
                "after a restart)",
                j->file, step, strerror(-rc));
  }
  /* Not closing yet, the callbacks may drop the last reference: then `j`
   * is freed within end_waiters, and not touched after it. */
  int closing = j->closing;
  end_waiters(j, n, rc);
  if (closing && j->nwait > 0)
    end_waiters(j, j->nwait, -ECANCELED);
}

/* ---- the journal ----------------------------------------------------------
 */

/* Frees journal `j` (NULL-safe) and its entries, found and journaled,
 * without saving it. */
static void journal_free(lg_rj_t *j) {
  if (j == NULL)
    return;
  for (size_t i = 0; i < j->nfound; i++)
    lg_rj_entry_free(&j->found[i]);
  for (size_t i = 0; i < j->n; i++)
    lg_rj_entry_free(&j->e[i]);
  lg_atomic_file_destroy(j->af);
  free(j->wait);
  free(j->found);
  free(j->e);
  free(j->dir);
  free(j->name);
  free(j->file);
  free(j);
}

lg_rj_t *lg_rj_open(uv_loop_t *loop, const char *state_dir, const char *name,
                    char *err, size_t errlen) {
  for (lg_rj_t *j = open_journals; j != NULL; j = j->next)
    if (strcmp(j->dir, state_dir) == 0 && strcmp(j->name, name) == 0) {
      j->refs++;
      return j;
    }
  lg_rj_t *j = calloc(1, sizeof *j);
  size_t fl = strlen(state_dir) + strlen(name) + sizeof "/requests-.json";
  if (j == NULL || (j->dir = lg_util_strdup(state_dir)) == NULL ||
      (j->name = lg_util_strdup(name)) == NULL ||
      (j->file = malloc(fl)) == NULL) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  snprintf(j->file, fl, "%s/requests-%s.json", state_dir, name);
  /* An output's name is any Lua string: only [A-Za-z0-9._-] go into the
   * file name ("a/b" would name a directory that does not exist). */
  for (char *c = j->file + strlen(state_dir) + sizeof "/requests-" - 1;
       c < j->file + strlen(j->file) - 5; c++)
    if (!isalnum((unsigned char)*c) && *c != '.' && *c != '_' && *c != '-')
      *c = '_';
  j->loop = loop;
  j->next_id = 1;
  j->refs = 1;
  j->af =
      lg_atomic_file_create(j->dir, j->file, 0600, write_fill, write_done, j);
  if (j->af == NULL) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  char *text = NULL;
  size_t len = 0;
  int rc = lg_util_read_file(j->file, RJ_MAX_FILE, &text, &len);
  char why[128] = "";
  if (rc == 0 && parse(j, text, len, why, sizeof why) != 0) {
    /* Set aside, not lost: the worst outcome is records in two objects. */
    char aside[4200];
    snprintf(aside, sizeof aside, "%s.corrupt", j->file);
    lg_log_error("output",
                 "%s is not a request journal (%s): moved to %s; the "
                 "requests in flight before are not made again",
                 j->file, why, aside);
    rename(j->file, aside);
    for (size_t i = 0; i < j->nfound; i++)
      lg_rj_entry_free(&j->found[i]);
    free(j->found);
    j->found = NULL;
    j->nfound = 0;
  } else if (rc != 0 && rc != -ENOENT) {
    snprintf(err, errlen, "%s: %s", j->file, strerror(-rc));
    free(text);
    goto fail;
  }
  free(text);
  /* The found entries stay journaled until made again and settled. */
  if (j->nfound > 0) {
    j->e = calloc(j->nfound, sizeof *j->e);
    if (j->e == NULL) {
      snprintf(err, errlen, "out of memory");
      goto fail;
    }
    for (; j->n < j->nfound; j->n++)
      if (entry_copy(&j->e[j->n], &j->found[j->n]) != 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
      }
    j->cap = j->nfound;
  }
  j->next = open_journals;
  open_journals = j;
  return j;
fail:
  journal_free(j);
  return NULL;
}

void lg_rj_close(lg_rj_t *j) {
  if (j == NULL || --j->refs > 0 || j->closing)
    return;
  j->closing = 1;
  for (lg_rj_t **pp = &open_journals; *pp != NULL; pp = &(*pp)->next)
    if (*pp == j) {
      *pp = j->next;
      break;
    }
  /* The write in flight ends (write_done: the entries in it get its
   * result, those added after it started -ECANCELED), then what changed
   * since (removals) is written the same way, waited for too: the loop
   * thread blocks for their fsyncs, but does not do them. */
  lg_atomic_file_wait(j->af);
  if (j->gen != j->saved_gen) {
    int rc = lg_atomic_file_write(j->af, j->loop);
    if (rc == 0)
      lg_atomic_file_wait(j->af);
    else
      write_done(j, rc, "encode");
  }
  journal_free(j);
}

size_t lg_rj_take_found(lg_rj_t *j, lg_rj_entry_t **out) {
  size_t n = j->nfound;
  *out = j->found;
  j->found = NULL;
  j->nfound = 0;
  return n;
}

int64_t lg_rj_add(lg_rj_t *j, const lg_rj_run_t *runs, uint32_t nruns,
                  const char *note, lg_rj_done_cb cb, void *ud) {
  if (LG_GROW(j->e, j->cap, j->n + 1, 8) != 0 ||
      LG_GROW(j->wait, j->wait_cap, j->nwait + 1, 8) != 0)
    return -ENOMEM;
  lg_rj_entry_t x = {.id = j->next_id, .nruns = nruns};
  x.runs = (lg_rj_run_t *)runs;
  x.note = (char *)(note ? note : "");
  for (uint32_t k = 0; k < nruns; k++)
    x.left += runs[k].count;
  if (entry_copy(&j->e[j->n], &x) != 0)
    return -ENOMEM;
  j->n++;
  j->gen++;
  j->wait[j->nwait++] = (rj_waiter_t){x.id, cb, ud, 0};
  /* One write at a time: during one (or while callbacks of the last one
   * run) the entry waits for the next, with the others added meanwhile. */
  int rc = lg_atomic_file_write(j->af, j->loop);
  if (rc != 0) {
    j->nwait--;
    forget(j, x.id);
    return rc;
  }
  return (int64_t)j->next_id++;
}

const char *lg_rj_note(const lg_rj_t *j, uint64_t id) {
  const lg_rj_entry_t *e = find(j, id);
  return e != NULL ? e->note : NULL;
}

void lg_rj_drop(lg_rj_t *j, uint64_t id) { forget(j, id); }

void lg_rj_settle_run(lg_rj_t *j, uint64_t id, uint64_t fp, uint64_t lo,
                      uint64_t hi) {
  lg_rj_entry_t *e = find(j, id);
  for (uint32_t k = 0; e != NULL && k < e->nruns; k++) {
    lg_rj_run_t *r = &e->runs[k];
    if (!r->acked && r->fp == fp && r->first >= lo && r->last <= hi) {
      r->acked = 1;
      j->gen++; /* with the next write */
    }
  }
}

void lg_rj_settle(lg_rj_t *j, uint64_t id, uint64_t n) {
  lg_rj_entry_t *e = find(j, id);
  if (e == NULL)
    return;
  e->left = e->left > n ? e->left - n : 0;
  if (e->left == 0)
    lg_rj_drop(j, id);
}
