/*
 * The request journal's side of the delivery layer (lg_req_journal.h):
 * journaling requests (lg_out_req_journal), settling entries as their
 * submissions are acked, and after a restart making the requests that were
 * in flight again.
 *
 * At the start, each entry found becomes a rebuild: records submitted
 * after that whose file and offset fall in one of its runs are held with
 * it instead of going to the pending ones. Once it has all its records it
 * is sent before anything else, frozen: exactly those records in their
 * journaled order, so the output makes the same thing of them (the same S3
 * object under the same key, which overwrites the one written before the
 * crash). Records of a file come in order, so once records past a run
 * came, no more of it will; nor will they when the file is read from past
 * the run (its checkpoint is past it: lg_output_file_resumed), or when the
 * journal says the run was acked (lg_rj_settle_run; written with the next
 * write, so not always there): all there is to go by for a file that gets
 * no later record (rotated away and acked to its end, or deleted, before
 * the crash). A rebuild none of whose
 * records came is a leftover entry whose records were acked (dropped);
 * one of whose records only some came was answered before the crash (the
 * others were acked):
 * it is made again `partly`, and the output tells from its note what of it
 * it wrote then. Rebuilds still waiting REBUILD_WAIT_MS after the start
 * (a file deleted meanwhile), at a close by a reload that removes the
 * output, or for records read before a reload created the output
 * (lg_output_file_read) are given up: their records go out like any
 * others. A reload that re-creates the output hands the waiting ones
 * over to the new output (lg_output_hand_over; one some of whose records
 * cannot be handed on is given up there). Once the collector stops
 * (lg_output_stopping) none is given up: reading is paused, the records
 * they hold stay unacked and their entries journaled, and the next start
 * reads those records again and makes the requests then.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/lg_log.h"
#include "core/lg_util.h"
#include "outputs/lg_delivery_internal.h"
#include "pipeline/lg_batch.h"

/* How long after the start requests of the last run wait for their records
 * to be read again before they are given up. */
#define REBUILD_WAIT_MS 30000

/* `n` records of submission `s` are in journal entry `id`. */
void lg__dlv_sub_add_entry(out_priv_t *p, sub_t *s, uint64_t id, uint32_t n) {
  if (s->nentries > 0 && s->entries[s->nentries - 1].id == id) {
    s->entries[s->nentries - 1].n += n;
    return;
  }
  if (LG_GROW(s->entries, s->entries_cap, s->nentries + 1, 2) != 0) {
    /* The entry then stays in the journal: after a restart it is seen
     * to be past the checkpoint and dropped. */
    lg_log_error(p->component, "out of memory; a journal entry is kept");
    return;
  }
  s->entries[s->nentries++] = (struct sub_entry){id, n};
}

void lg__dlv_sub_take_entry(sub_t *s, uint64_t id, uint32_t n) {
  for (uint32_t k = 0; k < s->nentries; k++)
    if (s->entries[k].id == id) {
      s->entries[k].n -= n < s->entries[k].n ? n : s->entries[k].n;
      return;
    }
}

/* ---- rebuilds ----------------------------------------------------------- */

static void rebuild_remove(out_priv_t *p, size_t i) {
  rebuild_t *b = &p->rebuilds[i];
  lg_rj_entry_free(&b->e);
  free(b->got);
  free(b->passed);
  free(b->held);
  /* In journal order: the oldest request goes first. */
  memmove(&p->rebuilds[i], &p->rebuilds[i + 1],
          (--p->nrebuilds - i) * sizeof *p->rebuilds);
}

/* Gives rebuild `i` up: the records of it that came go out like any
 * others, and its entry leaves the journal. */
static void rebuild_give_up(out_priv_t *p, size_t i, const char *why) {
  rebuild_t *b = &p->rebuilds[i];
  uint64_t n = 0;
  for (size_t k = 0; k < b->nheld; k++)
    n += b->held[k].sp.count;
  if (n > 0)
    lg_log_warn(p->component,
                "could not rebuild a request in flight before the restart "
                "(%s): its %" PRIu64 " record(s) read again are sent anew "
                "and may also be in what that request wrote",
                why, n);
  else
    lg_log_info(p->component,
                "a request in flight before the restart is not made again "
                "(%s): none of its records came yet",
                why);
  /* Each in its place in submit order; out of memory, it waits. */
  for (size_t k = 0; k < b->nheld; k++) {
    span_t sp = b->held[k].sp;
    sp.entry = 0;
    lg__dlv_pend_put(p, sp, 0);
  }
  lg_rj_drop(p->rj, b->e.id);
  rebuild_remove(p, i);
}

static int rebuild_ready(const rebuild_t *b) {
  if (b->partly)
    return 1;
  for (uint32_t k = 0; k < b->e.nruns; k++)
    if (b->got[k] != b->e.runs[k].count)
      return 0;
  return 1;
}

/* After records came for rebuild `i`: one that can no longer get all its
 * records (records of its files past it came, and not all of its own) is
 * dropped when none of its own came (a leftover entry whose records were
 * all acked before the restart), else made again with the records that
 * came, marked `partly`: the others were acked, so the request was
 * answered before the crash, and the output tells by its note which of
 * the records that came are in what it wrote then (an S3 object whose
 * other records were acked exists: they are in it). */
static void rebuild_check(out_priv_t *p, size_t i) {
  rebuild_t *b = &p->rebuilds[i];
  uint64_t got = 0;
  if (p->adopting)
    return; /* some of its records are still on their way here */
  for (uint32_t k = 0; k < b->e.nruns; k++) {
    got += b->got[k];
    if (b->got[k] != b->e.runs[k].count && !b->passed[k])
      return; /* ready, or more may come */
  }
  if (rebuild_ready(b))
    return;
  if (got == 0) {
    lg_rj_drop(p->rj, b->e.id);
    rebuild_remove(p, i);
  } else {
    b->partly = 1;
  }
}

/* Which run of a waiting rebuild record `off` of file `fp` belongs to:
 * *bi, *ri; 0 if none. */
static int rebuild_find(const out_priv_t *p, uint64_t fp, uint64_t off,
                        size_t *bi, uint32_t *ri) {
  for (size_t i = 0; i < p->nrebuilds; i++) {
    const rebuild_t *b = &p->rebuilds[i];
    for (uint32_t k = 0; k < b->e.nruns; k++) {
      const lg_rj_run_t *r = &b->e.runs[k];
      if (r->fp == fp && off >= r->first && off <= r->last &&
          b->got[k] < r->count) {
        *bi = i;
        *ri = k;
        return 1;
      }
    }
  }
  return 0;
}

/* Queues span `sp`: pending, or (bi < nrebuilds) held by rebuild bi. */
static void route_span(out_priv_t *p, span_t sp, size_t bi, uint32_t ri) {
  if (bi < p->nrebuilds) {
    rebuild_t *b = &p->rebuilds[bi];
    if (LG_GROW(b->held, b->cap, b->nheld + 1, 4) == 0) {
      sp.entry = b->e.id;
      lg__dlv_sub_add_entry(p, sp.s, sp.entry, sp.count);
      b->held[b->nheld].sp = sp;
      b->held[b->nheld++].run = ri;
      return;
    }
    /* Sent as a new record instead: the request cannot be made again
     * exactly (it counted this record as come), so it is given up. */
    b->no_room = 1;
  }
  lg__dlv_pend_put(p, sp, 1);
}

/* A run of a submission's records for run `ri` of rebuild `bi`, or
 * (bi SIZE_MAX) of none. */
typedef struct cut {
  span_t sp;
  size_t bi;
  uint32_t ri;
} cut_t;

int lg__dlv_route_records(out_priv_t *p, sub_t *s) {
  const lg_batch_t *bt = s->p->batch;
  uint64_t fp = bt != NULL ? bt->fingerprint : 0;
  int hit = 0;
  for (size_t i = 0; fp != 0 && i < p->nrebuilds && !hit; i++)
    for (uint32_t k = 0; k < p->rebuilds[i].e.nruns && !hit; k++)
      hit = p->rebuilds[i].e.runs[k].fp == fp;
  if (!hit) {
    span_t sp = {.s = s, .count = s->p->n, .bytes = s->p->data.len};
    return lg__dlv_pend_push_back(p, sp);
  }
  /* Cut into runs first, then room made for each to wait in (should it
   * not be queued for want of memory, lg__dlv_pend_put, now or when its
   * rebuild is given up): nothing is queued or held before both are
   * made. */
  cut_t *cuts = malloc(s->p->n * sizeof *cuts);
  if (cuts == NULL)
    return -ENOMEM;
  size_t ncuts = 0;
  cut_t cur = {.sp = {.s = s}, .bi = SIZE_MAX};
  uint64_t off = 0;
  uint32_t idx = lg_payload_index(s->p, 0);
  for (uint32_t k = 0; k < s->p->n; k++) {
    off = bt->recs[idx].offset;
    size_t bi = SIZE_MAX;
    uint32_t ri = 0;
    if (rebuild_find(p, fp, off, &bi, &ri))
      p->rebuilds[bi].got[ri]++;
    if (k > 0 && (bi != cur.bi || ri != cur.ri)) {
      cuts[ncuts++] = cur;
      cur = (cut_t){.sp = {.s = s, .first = k}};
    }
    cur.bi = bi;
    cur.ri = ri;
    cur.sp.count++;
    cur.sp.bytes += lg_payload_len(s->p, k);
    idx = lg_payload_next_index(s->p, idx);
  }
  cuts[ncuts++] = cur;
  s->waits = malloc(ncuts * sizeof *s->waits);
  if (s->waits == NULL) {
    for (size_t c = 0; c < ncuts; c++)
      if (cuts[c].bi != SIZE_MAX)
        p->rebuilds[cuts[c].bi].got[cuts[c].ri] -= cuts[c].sp.count;
    free(cuts);
    return -ENOMEM;
  }
  s->waits_cap = (uint32_t)ncuts;
  for (size_t c = 0; c < ncuts; c++)
    route_span(p, cuts[c].sp, cuts[c].bi, cuts[c].ri);
  free(cuts);
  /* Records of a file come in order: past a run's last offset, no more
   * of its records will come. */
  for (size_t i = 0; i < p->nrebuilds; i++)
    for (uint32_t k = 0; k < p->rebuilds[i].e.nruns; k++)
      if (p->rebuilds[i].e.runs[k].fp == fp &&
          off > p->rebuilds[i].e.runs[k].last)
        p->rebuilds[i].passed[k] = 1;
  for (size_t i = p->nrebuilds; i-- > 0;)
    if (p->rebuilds[i].no_room)
      rebuild_give_up(p, i, "out of memory holding its records");
    else
      rebuild_check(p, i);
  return 0;
}

void lg__dlv_rebuild_prefixes(out_priv_t *p, uint64_t fp,
                              const uint64_t *prefix, uint32_t n) {
  for (size_t i = 0; i < p->nrebuilds; i++)
    for (uint32_t k = 0; k < p->rebuilds[i].e.nruns; k++) {
      lg_rj_run_t *r = &p->rebuilds[i].e.runs[k];
      if (r->fp == fp || p->rebuilds[i].got[k] > 0)
        continue;
      /* Prefix j covers bytes [0, j + 1): the run's records, read while
       * the file was that long, lie within it; a run past it is not a
       * batch of that prefix (a hash collision: left alone). */
      for (uint32_t j = 0; j < n; j++)
        if (prefix[j] == r->fp && r->last <= j) {
          lg_log_info(p->component,
                      "a request of the last run holds records read while "
                      "their file was %u bytes long: waited for under the "
                      "file's fingerprint now (%016" PRIx64 ")",
                      j + 1, fp);
          r->fp = fp;
          break;
        }
    }
}

int lg__dlv_rebuild_resumed(out_priv_t *p, uint64_t fp, uint64_t offset) {
  int hit = 0;
  for (size_t i = 0; i < p->nrebuilds; i++)
    for (uint32_t k = 0; k < p->rebuilds[i].e.nruns; k++)
      if (p->rebuilds[i].e.runs[k].fp == fp &&
          p->rebuilds[i].e.runs[k].last < offset) {
        p->rebuilds[i].passed[k] = 1;
        hit = 1;
      }
  if (!hit)
    return 0;
  for (size_t i = p->nrebuilds; i-- > 0;)
    rebuild_check(p, i);
  for (size_t i = 0; i < p->nrebuilds; i++)
    if (rebuild_ready(&p->rebuilds[i]))
      return 1;
  return 0;
}

int lg__dlv_rebuild_read(out_priv_t *p, uint64_t fp, uint64_t from, uint64_t to,
                         const char *why) {
  int any = 0;
  for (size_t i = p->nrebuilds; i-- > 0;) {
    const rebuild_t *b = &p->rebuilds[i];
    int lost = 0;
    for (uint32_t k = 0; k < b->e.nruns && !lost; k++) {
      const lg_rj_run_t *r = &b->e.runs[k];
      /* A run passed (acked before the crash: before the checkpoint the
       * file resumed at) or complete waits for nothing; else its records
       * from `from` on were read here, before this output existed. */
      lost = r->fp == fp && !b->passed[k] && b->got[k] < r->count &&
             r->last >= from && (r->first > from ? r->first : from) < to;
    }
    if (lost) {
      rebuild_give_up(p, i, why);
      any = 1;
    }
  }
  return any;
}

/* Rebuild `i` has all its records: its request, with its records in their
 * old order and nothing else (frozen, like a retry). NULL when out of
 * memory. */
static req_t *take_one(out_priv_t *p, size_t i) {
  rebuild_t *b = &p->rebuilds[i];
  uint64_t nrecs = 0;
  for (size_t h = 0; h < b->nheld; h++)
    nrecs += b->held[h].sp.count;
  req_t *r = lg__dlv_req_new(p, nrecs);
  span_t *sp = malloc((b->nheld ? b->nheld : 1) * sizeof *sp);
  if (r == NULL || sp == NULL) {
    if (r != NULL)
      lg__dlv_req_free(r);
    free(sp);
    return NULL;
  }
  size_t n = 0;
  for (uint32_t k = 0; k < b->e.nruns; k++)
    for (size_t h = 0; h < b->nheld; h++)
      if (b->held[h].run == k) {
        sp[n] = b->held[h].sp;
        r->pub.n += sp[n].count;
        r->pub.bytes += sp[n].bytes;
        n++;
      }
  sp[0].cap = r->pub.n;
  r->spans = sp;
  r->nspans = (uint32_t)n;
  r->pub.o = &p->pub;
  r->partly = b->partly;
  lg_log_info(p->component,
              "rebuilt a request in flight before the restart: %u record(s) "
              "at its old boundaries%s",
              r->pub.n,
              b->partly ? " (the others were acked before: it was answered)"
                        : "");
  /* The entry stays journaled until its records are acked (those that
   * did not come again were acked before). */
  if (b->partly) {
    uint64_t missing = 0;
    for (uint32_t k = 0; k < b->e.nruns; k++)
      missing += b->e.runs[k].count - b->got[k];
    lg_rj_settle(p->rj, b->e.id, missing);
  }
  rebuild_remove(p, i);
  return r;
}

uint64_t lg__dlv_rebuild_expire(out_priv_t *p, int all) {
  /* Stopping: reading is paused for good, so what a rebuild waits for
   * will not come in this process; the next start reads its records
   * again (they are not acked) and makes it then. Giving it up would
   * send them in another request (a second copy of what it wrote before
   * the crash) and drop its entry. */
  if (p->nrebuilds == 0 || p->stopping || p->adopting)
    return 0;
  if (!all && uv_now(p->pub.loop) < p->rebuild_until)
    return p->rebuild_until;
  for (size_t i = p->nrebuilds; i-- > 0;)
    if (!rebuild_ready(&p->rebuilds[i]))
      rebuild_give_up(p, i,
                      all ? "closing" : "its records were not all read again");
  return 0;
}

uint64_t lg__dlv_rebuild_held(const out_priv_t *p) {
  uint64_t n = 0;
  for (size_t i = 0; i < p->nrebuilds; i++) {
    const rebuild_t *b = &p->rebuilds[i];
    if (rebuild_ready(b))
      return UINT64_MAX;
    for (size_t k = 0; k < b->nheld; k++)
      n += b->held[k].sp.count;
  }
  return n;
}

req_t *lg__dlv_rebuild_take(out_priv_t *p, int *none) {
  *none = 1;
  for (size_t i = 0; i < p->nrebuilds && !p->adopting; i++)
    if (rebuild_ready(&p->rebuilds[i])) {
      *none = 0;
      return take_one(p, i);
    }
  return NULL;
}

void lg__dlv_rebuild_free_all(out_priv_t *p) {
  while (p->nrebuilds > 0)
    rebuild_remove(p, p->nrebuilds - 1);
  free(p->rebuilds);
  p->rebuilds = NULL;
}

/* ---- a reload re-creates the output ------------------------------------ */

out_priv_t *lg__dlv_successor_for(const out_priv_t *p, const sub_t *s) {
  if (p->succ == NULL || s->p->batch == NULL || s->p->batch->fingerprint == 0)
    return NULL;
  out_priv_t *q = p->succ;
  while (q->succ != NULL)
    q = q->succ;
  if (q->closing || q->abandoned)
    return NULL;
  uint64_t fp = s->p->batch->fingerprint;
  for (size_t i = 0; i < q->nrebuilds; i++)
    for (uint32_t k = 0; k < q->rebuilds[i].e.nruns; k++)
      if (q->rebuilds[i].e.runs[k].fp == fp)
        return q;
  return NULL;
}

void lg__dlv_not_handed(out_priv_t *p, out_priv_t *q, const sub_t *s,
                        uint32_t first, uint32_t count) {
  const lg_payload_t *pl = s->p;
  uint64_t lo = UINT64_MAX, hi = 0;
  for (uint32_t k = first; k < first + count; k++) {
    uint64_t off = pl->batch->recs[lg_payload_index(pl, k)].offset;
    lo = off < lo ? off : lo;
    hi = off > hi ? off : hi;
  }
  lg_log_warn(p->component,
              "could not hand %u record(s) on to the output that replaces "
              "it, which waits for records of their file: sent anew",
              count);
  if (count > 0 &&
      lg__dlv_rebuild_read(q, pl->batch->fingerprint, lo, hi + 1,
                           "some of its records could not be handed on "
                           "to this output by the one it replaces"))
    lg__dlv_kick(q);
}

void lg_output_hand_over(lg_output_t *from, lg_output_t *to) {
  out_priv_t *p = PRIV(from), *q = PRIV(to);
  if (p == q || p->nrebuilds == 0 || p->rj == NULL || p->rj != q->rj ||
      p->closing || q->closing || p->abandoned || q->abandoned)
    return; /* nothing waits, or another journal: p gives them up */
  size_t n = p->nrebuilds;
  rebuild_t *all = realloc(q->rebuilds, (q->nrebuilds + n) * sizeof *all);
  if (all != NULL)
    q->rebuilds = all;
  size_t made = 0;
  for (; all != NULL && made < n; made++) {
    const rebuild_t *b = &p->rebuilds[made];
    rebuild_t *d = &q->rebuilds[q->nrebuilds + made];
    *d = (rebuild_t){.partly = b->partly};
    d->got = calloc(b->e.nruns, sizeof *d->got);
    if (d->got == NULL)
      break;
  }
  if (made < n) {
    for (size_t i = 0; all != NULL && i < made; i++)
      free(q->rebuilds[q->nrebuilds + i].got);
    lg_log_error(p->component, "out of memory: the requests of the last run "
                               "it waits for are given up at its close");
    return;
  }
  /* q takes the entries as they are (runs that took a file's fingerprint
   * now, runs known passed), and counts their records again as they come
   * on to it: first those p holds, then any p still gets. */
  for (size_t i = 0; i < n; i++) {
    rebuild_t *d = &q->rebuilds[q->nrebuilds + i];
    d->e = p->rebuilds[i].e;
    d->passed = p->rebuilds[i].passed;
  }
  if (q->nrebuilds == 0 || p->rebuild_until < q->rebuild_until)
    q->rebuild_until = p->rebuild_until;
  q->nrebuilds += n;
  q->adopting = 1;
  rebuild_t *old = p->rebuilds;
  p->rebuilds = NULL;
  p->nrebuilds = 0;
  p->succ = q;
  q->pred = p;
  uint64_t moved = 0, kept = 0;
  for (size_t i = 0; i < n; i++) {
    for (size_t h = 0; h < old[i].nheld; h++) {
      span_t sp = old[i].held[h].sp;
      lg__dlv_sub_take_entry(sp.s, old[i].e.id, sp.count);
      if (lg__dlv_hand_on(p, sp.s, sp.first, sp.count, q) == 0) {
        moved += sp.count;
        continue;
      }
      /* As a give-up would: p sends them in a request of its own, and
       * q gives the request up (made partly without them, those that
       * came would be taken as written before the crash). */
      sp.entry = 0;
      kept += sp.count;
      q->rebuilds[q->nrebuilds - n + i].lost = 1;
      lg__dlv_pend_put(p, sp, 1);
    }
    free(old[i].got);
    free(old[i].held);
  }
  free(old);
  q->adopting = 0;
  for (size_t i = q->nrebuilds; i-- > 0;)
    if (q->rebuilds[i].lost)
      rebuild_give_up(q, i,
                      "some of its records could not be handed on to this "
                      "output by the one it replaces");
    else
      rebuild_check(q, i);
  lg_log_info(q->component,
              "took over %zu request(s) of the last run that the output it "
              "replaces waited for, and the %" PRIu64 " record(s) of them "
              "that came",
              n, moved);
  if (kept > 0)
    lg_log_warn(p->component,
                "could not hand %" PRIu64 " record(s) of requests of the "
                "last run on to the output that replaces it: sent anew, they "
                "may also be in what those requests wrote",
                kept);
  lg__dlv_kick(q);
  if (kept > 0)
    lg__dlv_kick(p);
}

void lg_output_set_state_dir(lg_output_t *o, const char *state_dir) {
  out_priv_t *p = PRIV(o);
  if (!o->vt->journal || state_dir == NULL || p->rj != NULL)
    return;
  char err[512];
  p->rj = lg_rj_open(o->loop, state_dir, o->name, err, sizeof err);
  if (p->rj == NULL) {
    lg_log_error(p->component,
                 "request journal: %s; running without it (after a crash, "
                 "records read again may be sent twice)",
                 err);
    return;
  }
  lg_rj_entry_t *found = NULL;
  size_t n = lg_rj_take_found(p->rj, &found);
  p->rebuilds = n > 0 ? calloc(n, sizeof *p->rebuilds) : NULL;
  for (size_t i = 0; i < n; i++) {
    rebuild_t *b = p->rebuilds != NULL ? &p->rebuilds[p->nrebuilds] : NULL;
    if (b != NULL) {
      b->got = calloc(found[i].nruns, sizeof *b->got);
      b->passed = calloc(found[i].nruns, sizeof *b->passed);
    }
    if (b == NULL || b->got == NULL || b->passed == NULL) {
      if (b != NULL) {
        free(b->got);
        free(b->passed);
      }
      lg_log_error(p->component, "out of memory: a request of the last run "
                                 "is not made again");
      lg_rj_drop(p->rj, found[i].id);
      lg_rj_entry_free(&found[i]);
      continue;
    }
    b->e = found[i];
    /* Runs acked before the crash (the request was answered) are not
     * read again: waited for no more than a run passed. */
    for (uint32_t k = 0; k < b->e.nruns; k++)
      b->passed[k] = b->e.runs[k].acked;
    p->nrebuilds++;
  }
  free(found);
  if (p->nrebuilds > 0) {
    lg_log_info(p->component,
                "%zu request(s) were in flight when the last run ended: "
                "made again with the same records once they are read again",
                p->nrebuilds);
    p->rebuild_until = uv_now(o->loop) + REBUILD_WAIT_MS;
  }
}

/* The journal write of request `ud` ended: its spans name the entry (so
 * that a retry is not journaled again and their submissions settle it),
 * then the output is told. */
static void journaled(void *ud, uint64_t id, int status) {
  req_t *r = ud;
  out_priv_t *p = PRIV(r->pub.o);
  for (uint32_t i = 0; status == 0 && i < r->nspans; i++) {
    r->spans[i].entry = id;
    lg__dlv_sub_add_entry(p, r->spans[i].s, id, r->spans[i].count);
  }
  lg_out_journaled_cb cb = r->journaled;
  r->journaled = NULL;
  cb(&r->pub, status);
}

int lg_out_req_journal(lg_out_req_t *pr, const char *note,
                       lg_out_journaled_cb cb) {
  req_t *r = (req_t *)pr;
  out_priv_t *p = PRIV(r->pub.o);
  if (p->rj == NULL || r->nspans == 0 || r->spans[0].entry != 0)
    return 0; /* no journal, or journaled already */
  lg_rj_run_t *runs = malloc(r->nspans * sizeof *runs);
  if (runs == NULL)
    return -ENOMEM;
  for (uint32_t i = 0; i < r->nspans; i++) {
    const span_t *s = &r->spans[i];
    const lg_payload_t *pl = s->s->p;
    if (pl->batch == NULL || pl->batch->fingerprint == 0) {
      free(runs); /* records with no id: it cannot be made again */
      return 0;
    }
    uint32_t a = lg_payload_index(pl, s->first), z = a;
    for (uint32_t k = 1; k < s->count; k++)
      z = lg_payload_next_index(pl, z);
    runs[i] = (lg_rj_run_t){pl->batch->fingerprint, pl->batch->recs[a].offset,
                            pl->batch->recs[z].offset, s->count, 0};
  }
  r->journaled = cb;
  int64_t id = lg_rj_add(p->rj, runs, r->nspans, note, journaled, r);
  free(runs);
  if (id < 0) {
    r->journaled = NULL;
    lg_log_error(p->component, "request journal: %s; the request waits",
                 strerror((int)-id));
    return (int)id;
  }
  return 1;
}

int lg_out_req_partly(lg_out_req_t *pr) { return ((req_t *)pr)->partly; }

const char *lg_out_req_note(lg_out_req_t *pr) {
  req_t *r = (req_t *)pr;
  out_priv_t *p = PRIV(r->pub.o);
  if (p->rj == NULL || r->nspans == 0 || r->spans[0].entry == 0)
    return NULL;
  return lg_rj_note(p->rj, r->spans[0].entry);
}
