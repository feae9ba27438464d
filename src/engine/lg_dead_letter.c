/* Output acks as the engine sees them: delivered records are counted, a
 * chunk an output rejected for good is re-sent to the dead-letter output
 * with the reason in each record, and the output's id hook. */
#include "engine/lg_engine_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/lg_json.h"
#include "core/lg_log.h"
#include "pipeline/lg_ffi.h"

/* Copies `chunk` (JSON lines, one record object each) into `out` with
 * "lugger.error": `why` added as the last key of every record, the way a
 * record a script failed on carries its error. 0 or -ENOMEM. */
static int add_error_to_lines(const lg_buf_t *chunk, const char *why,
                              lg_buf_t *out) {
  const char *p = chunk->data, *end = chunk->data + chunk->len;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
    if (n >= 2 && p[0] == '{' && p[n - 1] == '}') {
      int rc = lg_buf_append(out, p, n - 1);
      if (rc == 0 && n > 2)
        rc = lg_buf_putc(out, ',');
      if (rc == 0)
        rc = lg_buf_append(out, "\"lugger.error\":", 15);
      if (rc == 0)
        rc = lg_json_append_string(out, why, strlen(why));
      if (rc == 0)
        rc = lg_buf_append(out, "}\n", 2);
      if (rc != 0)
        return rc;
    } else if (lg_buf_append(out, p, n) != 0 || lg_buf_putc(out, '\n') != 0) {
      return -ENOMEM; /* not a record object: passed on unchanged */
    }
    p += n + 1;
  }
  return 0;
}

/* Output ack: `ref` is the batch. A permanent failure sends the chunk's
 * records to the dead-letter output instead, so nothing is lost; the
 * batch stays pending until the dead-letter output has them. */
void lg__on_output_ack(void *ud, void *ref, int status) {
  output_ctx_t *oc = ud;
  engine_t *e = oc->e;
  lg_batch_t *b = ref;
  if (status >= 0 && b->owner != NULL && (uint32_t)oc->index < 64)
    lg_metric_add(e->m.delivered[oc->index], ST(b)->nrecs_out[oc->index]);
  if (status < 0) {
    if (b->owner != NULL && (uint32_t)oc->index < 64)
      lg_metric_add(e->m.out_failed[oc->index], ST(b)->nrecs_out[oc->index]);
    int dl = e->dead_letter; /* the current one is always open */
    if (dl >= 0 && dl != oc->index && (uint32_t)oc->index < b->nout) {
      lg_log_error("engine",
                   "output %s rejected records for good (%s); sending them "
                   "to the dead-letter output %s",
                   e->output_names[oc->index], strerror(-status),
                   e->output_names[dl]);
      const lg_buf_t *chunk = &b->out[oc->index];
      ST(b)->rerouted = 1;
      char why[256];
      snprintf(why, sizeof why, "output %s rejected the records for good: %s",
               e->output_names[oc->index], strerror(-status));
      dl_chunk_t *c = b->owner != NULL ? calloc(1, sizeof *c) : NULL;
      if (c != NULL && add_error_to_lines(chunk, why, &c->buf) == 0) {
        c->next = ST(b)->dl_chunks;
        ST(b)->dl_chunks = c;
        chunk = &c->buf;
      } else if (c != NULL) {
        lg_buf_free(&c->buf); /* out of memory: the records go as they are */
        free(c);
      }
      if (lg_output_submit_n(e->outputs[dl], chunk->data, chunk->len,
                             ST(b)->nrecs_out[oc->index], b) == 0)
        return; /* still pending: the dead-letter ack completes it */
    }
    lg_log_error("engine",
                 "output %s failed for good (%s) and no dead-letter output "
                 "took the records: %u records of %s lost",
                 e->output_names[oc->index], strerror(-status), b->n,
                 b->meta ? "this file" : "a file");
  }
  lg__batch_output_done(e, b);
}

/* Output hook: the stable id of each record in the chunk an output got for
 * batch `ref`, in chunk order. It mirrors lg_worker_encode's choice of
 * which records go to which output. */
int lg__output_rec_ids(void *ud, void *ref,
                          void (*fn)(void *arg, uint32_t j, const char *id,
                                     size_t idlen),
                          void *arg) {
  output_ctx_t *oc = ud;
  engine_t *e = oc->e;
  lg_batch_t *b = ref;
  int k = oc->index;
  /* A chunk re-sent to the dead-letter output has another output's
   * records: their order is not this output's. */
  if (k == e->dead_letter && b->owner != NULL && ST(b)->rerouted)
    return -EINVAL;
  int dl = b->owner != NULL ? ST(b)->dead_letter : e->dead_letter;
  char id[64];
  uint32_t j = 0;
  for (uint32_t i = 0; i < b->n; i++) {
    const lg_rec_t *r = &b->recs[i];
    if (r->flags & LG_REC_DROPPED)
      continue;
    int mine = ((r->flags & LG_REC_FAILED) && dl >= 0)
                   ? k == dl
                   : (int)((r->routes >> k) & 1);
    if (!mine)
      continue;
    int n = lg_ffi_rec_id(b, i, id, sizeof id);
    if (n < 0)
      return n;
    fn(arg, j++, id, (size_t)n);
  }
  return 0;
}

