/* Output acks as the engine sees them, and which output takes the records
 * another output rejects for good. The outputs' delivery layer
 * (outputs/lg_delivery_dead_letter.c) hands each rejected record to the
 * dead-letter output itself, encoded from the batch with the reason in
 * "lugger.error"; a submission is acked once all its records are
 * delivered or there. */
#include "engine/lg_engine_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/lg_log.h"

/* Output ack: `ref` is the batch. A negative status means records were
 * lost: no dead-letter output took what the output rejected (the delivery
 * layer logged and counted them). The batch is done with this output
 * either way, so its file's checkpoint can move on. */
void lg__on_output_ack(void *ud, void *ref, int status) {
  output_ctx_t *oc = ud;
  engine_t *e = oc->e;
  lg_batch_t *b = ref;
  if (status < 0)
    lg_log_error("engine",
                 "output %s: records of a batch of %s were rejected and no "
                 "dead-letter output took them (%s)",
                 e->output_names[oc->index], b->meta ? "this file" : "a file",
                 strerror(-status));
  lg__batch_output_done(e, b);
}

/* Output about to send records of `ref` up to record `index` of batch
 * `b`: the batch's source records how far records may have reached an
 * output (lg_sources_sent); `b` NULL after the last of a request. */
void lg__on_output_sent(void *ud, void *ref, const lg_batch_t *b,
                        uint32_t index) {
  output_ctx_t *oc = ud;
  (void)ref;
  if (b == NULL)
    lg_sources_sent_flush(oc->e->sources);
  else if (index < b->n)
    lg_sources_sent(oc->e->sources, b, b->recs[index].end_offset);
}

/* For the outputs' delivery layer: the current dead-letter output, which a
 * reload never closes while it is current; NULL if it is not open. */
lg_output_t *lg__dead_letter_output(void *ud) {
  output_ctx_t *oc = ud;
  engine_t *e = oc->e;
  int dl = e->dead_letter;
  if (dl < 0 || (size_t)dl >= e->noutputs || e->slot_state[dl] != SLOT_LIVE)
    return NULL;
  return e->outputs[dl];
}
