/*
 * The request API output types call from send (lg_output.h): a request's
 * records and their bytes as an iovec, built on first use from the spans
 * the request took, and the per-record results of the answer.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "outputs/lg_delivery_internal.h"

req_t *lg__dlv_req_new(out_priv_t *p, uint64_t n) {
  req_t *r = calloc(1, sizeof *r);
  if (r == NULL)
    return NULL;
  if (n > 0 && (r->recs = malloc(n * sizeof *r->recs)) == NULL) {
    free(r);
    return NULL;
  }
  r->pub.o = &p->pub;
  return r;
}

const lg_out_rec_t *lg_out_req_recs(lg_out_req_t *pr) {
  req_t *r = (req_t *)pr;
  if (r->recs_filled || r->pub.n == 0)
    return r->recs;
  /* Made with its request; this is only for one made otherwise. */
  if (r->recs == NULL && (r->recs = malloc(r->pub.n * sizeof *r->recs)) == NULL)
    return NULL;
  r->recs_filled = 1;
  uint32_t j = 0;
  for (uint32_t i = 0; i < r->nspans; i++) {
    const span_t *s = &r->spans[i];
    const lg_payload_t *pl = s->s->p;
    uint32_t idx = lg_payload_index(pl, s->first);
    for (uint32_t k = s->first; k < s->first + s->count; k++) {
      lg_out_rec_t *o = &r->recs[j++];
      o->data = lg_payload_rec(pl, k, &o->len);
      o->meta = lg_payload_meta(pl, k, &o->meta_len);
      o->batch = pl->batch;
      o->index = idx;
      idx = lg_payload_next_index(pl, idx);
    }
  }
  return r->recs;
}

int lg_out_req_iov(lg_out_req_t *pr, const struct iovec **iov, int *niov) {
  req_t *r = (req_t *)pr;
  if (r->iov == NULL && r->nspans > 0) {
    r->iov = malloc(r->nspans * sizeof *r->iov);
    if (r->iov == NULL)
      return -ENOMEM;
    int n = 0;
    for (uint32_t i = 0; i < r->nspans; i++) {
      const span_t *s = &r->spans[i];
      const lg_payload_t *pl = s->s->p;
      uint32_t zlen, last = s->first + s->count - 1;
      char *start = pl->data.data + pl->off[s->first];
      const char *z = lg_payload_rec(pl, last, &zlen);
      size_t len = (size_t)(z + zlen - start);
      if (n > 0 &&
          (char *)r->iov[n - 1].iov_base + r->iov[n - 1].iov_len == start)
        r->iov[n - 1].iov_len += len;
      else
        r->iov[n++] = (struct iovec){start, len};
    }
    r->niov = n;
  }
  *iov = r->iov;
  *niov = r->niov;
  return 0;
}

void lg_out_req_retry_after(lg_out_req_t *pr, int64_t ms) {
  ((req_t *)pr)->retry_after = ms;
}

void lg_out_req_set(lg_out_req_t *pr, uint32_t j, lg_out_result_t result,
                    const char *reason) {
  req_t *r = (req_t *)pr;
  if (j >= r->pub.n || result == LG_OUT_SPLIT)
    return;
  /* Out of memory, the answer of this record (or its reason) would be
   * lost, and the request's result would stand for it (a record rejected
   * taken as delivered): the request is sent again instead
   * (lg_out_req_done). */
  if (r->results == NULL &&
      (r->results = calloc(r->pub.n, sizeof *r->results)) == NULL) {
    r->answer_lost = 1;
    return;
  }
  r->results[j] = (uint8_t)(result + 1);
  if (reason != NULL) {
    if (r->reasons == NULL)
      r->reasons = calloc(r->pub.n, sizeof *r->reasons);
    if (r->reasons == NULL) {
      r->answer_lost = 1;
      return;
    }
    free(r->reasons[j]);
    r->reasons[j] = strdup(reason);
    if (r->reasons[j] == NULL)
      r->answer_lost = 1;
  }
}

void lg__dlv_req_free(req_t *r) {
  if (r->reasons != NULL)
    for (uint32_t j = 0; j < r->pub.n; j++)
      free(r->reasons[j]);
  free(r->reasons);
  free(r->results);
  free(r->recs);
  free(r->iov);
  free(r->spans);
  free(r);
}

void lg__dlv_req_release(req_t *r) {
  if (r->dl_refs == 0)
    lg__dlv_req_free(r);
}
