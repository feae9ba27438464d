/*
 * lg_payload.h - the records of one batch encoded for one output.
 *
 * A worker encodes every record routed to output k into the batch's
 * payload k (lg_batch_t.out[k]) with output k's encoder, right after the
 * scripts ran; the output's delivery layer (outputs/lg_output.h) then
 * sends, retries and acknowledges those records one by one, so it needs to
 * know where each one is. A payload therefore holds:
 *   data   the records' wire bytes, back to back, in batch order (for the
 *          default JSON lines encoding: one object and "\n" per record);
 *   meta   side data an encoder keeps per record for its output's send
 *          (e.g. Kafka's topic and key), never sent as is;
 *   off    where each record starts (and, for records that are not the
 *          batch's records one for one, their indexes in the batch).
 * Offsets, not pointers, because data and meta grow by realloc while the
 * worker encodes; once the batch is back on the loop thread the payload no
 * longer changes.
 */
#ifndef LG_PAYLOAD_H
#define LG_PAYLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "core/lg_buf.h"

struct lg_batch;

/* Per record, 4 bytes (8 with side data), because a payload lives as long
 * as its batch and a batch holds thousands of records: record j's bytes
 * are data[off[j], off[j + 1]) (the last one's end is data.len), its side
 * data likewise in meta through meta_off. Which batch records are in the
 * payload is one bit per batch record (`kept`), and only once they stop
 * mapping one for one (a script dropped or routed some). */
typedef struct lg_payload {
  const struct lg_batch *batch; /* whose records these are; NULL when they
                                   were given as text (lg_payload_add_text) */
  lg_buf_t data, meta;
  uint32_t *off;  /* n entries */
  uint64_t *kept; /* bit i: batch record i is in the payload, in
                     order; NULL while record j is batch record j */
  uint32_t kept_words;
  uint32_t *meta_off; /* NULL while no record has side data */
  uint32_t n, cap;
} lg_payload_t;

#define LG_PAYLOAD_INIT                                                        \
  { NULL, LG_BUF_INIT, LG_BUF_INIT, NULL, NULL, 0, NULL, 0, 0 }

/* Record j's encoded bytes: *len gets their length. */
static inline const char *lg_payload_rec(const lg_payload_t *p, uint32_t j,
                                         uint32_t *len) {
  uint32_t end = j + 1 < p->n ? p->off[j + 1] : (uint32_t)p->data.len;
  *len = end - p->off[j];
  return p->data.data + p->off[j];
}

/* Record j's length in bytes. */
static inline uint32_t lg_payload_len(const lg_payload_t *p, uint32_t j) {
  uint32_t end = j + 1 < p->n ? p->off[j + 1] : (uint32_t)p->data.len;
  return end - p->off[j];
}

/* Record j's index in its batch (a scan of the kept bits: for single
 * records; lg_payload_next_index walks on from there). */
uint32_t lg_payload_index(const lg_payload_t *p, uint32_t j);

/* The batch index of the record after the one at batch index `i`. */
uint32_t lg_payload_next_index(const lg_payload_t *p, uint32_t i);

/* Record j's side data (NULL, *len 0: none). */
static inline const char *lg_payload_meta(const lg_payload_t *p, uint32_t j,
                                          uint32_t *len) {
  if (p->meta_off == NULL) {
    *len = 0;
    return NULL;
  }
  uint32_t end = j + 1 < p->n ? p->meta_off[j + 1] : (uint32_t)p->meta.len;
  *len = end - p->meta_off[j];
  return *len > 0 ? p->meta.data + p->meta_off[j] : NULL;
}

/* An output type's encoder (lg_output_type_t.encode): appends record `i`
 * of `b` in the output's wire form to out->data, and any side data its
 * send needs to out->meta. `conf` is the output's typed config (read only:
 * encoders run on several worker threads at once). `error`, when not NULL,
 * is a NUL-terminated reason the record is being sent to the dead-letter
 * output for; the encoding must carry it (JSON: "lugger.error"). The
 * record's id, time, body, metadata and fields are read from the batch
 * (lg_batch.h, lg_batch_rec_id). Returns 0, -ENOMEM, or another negative
 * errno for a record this output can never send (it is then rejected with
 * that reason without being sent). */
typedef int (*lg_encode_fn)(const void *conf, const struct lg_batch *b,
                            uint32_t i, const char *error, lg_payload_t *out);

/* An encoder bound to its config, as workers are given it. fn NULL is
 * lg_payload_encode_json. */
typedef struct lg_encoder {
  lg_encode_fn fn;
  const void *conf;
  /* 1: records encoded for this output may be handed to the dead-letter
   * output after the batch is encoded (the output rejects records, or
   * gives up on them after max_retry_time), and are then encoded again
   * from the batch: the batch must keep its script's fields until it is
   * released. */
  int keep_fields;
} lg_encoder_t;

/* The default encoding, JSON lines: lg_json_encode_record(_err). */
int lg_payload_encode_json(const void *conf, const struct lg_batch *b,
                           uint32_t i, const char *error, lg_payload_t *out);

/* Encodes record `i` of `b` with `enc` (NULL: JSON lines) and appends its
 * entry. A payload holds records of one batch in increasing index order. Sets
 * p->batch to `b` (a payload holds one batch's records). Returns 0, -ENOMEM,
 * -E2BIG (a payload over 4 GiB), or the encoder's error: then nothing of the
 * record is kept. */
int lg_payload_add(lg_payload_t *p, const lg_encoder_t *enc,
                   const struct lg_batch *b, uint32_t i, const char *error);

/* Appends a record given as `len` bytes of wire text (no batch behind it,
 * e.g. chunks of JSON lines in tests). Returns 0, -ENOMEM or -E2BIG. */
int lg_payload_add_text(lg_payload_t *p, const char *text, size_t len);

/* Splits `len` bytes of JSON lines into records, one per "\n"-terminated
 * line (a last line without "\n" is one record too) and appends them.
 * Returns 0, -ENOMEM or -E2BIG. */
int lg_payload_add_lines(lg_payload_t *p, const char *text, size_t len);

/* Bytes the payload has allocated (for the memory budget). */
size_t lg_payload_mem(const lg_payload_t *p);

/* Empties the payload, keeping its memory. */
void lg_payload_reset(lg_payload_t *p);

/* Cuts each buffer of the payload (encoded bytes, side data, per-record
 * offsets) that is over `min` bytes and holds less than 1/`ratio` of it
 * down to what it holds, rounded up to 256 bytes (freed when empty); the
 * encoded bytes' buffer keeps room for `keep` bytes at least (the records
 * a batch is about to encode). Nothing may hold a pointer into the
 * payload's buffers. A buffer realloc cannot cut stays as it is. Returns
 * the bytes given back (lg_payload_mem before minus after). */
size_t lg_payload_fit(lg_payload_t *p, size_t min, size_t ratio, size_t keep);

/* Frees what the payload holds and zeroes it. NULL-safe. */
void lg_payload_free(lg_payload_t *p);

#endif
