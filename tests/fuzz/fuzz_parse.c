/* libFuzzer target: the record parsers of lg_parse.h over arbitrary bodies:
 * JSON (nested and flattened), logfmt, key/value, CSV, a regex with typed
 * groups and a time group, and the time-format parser. Each must not
 * crash, read outside the body or leak; a JSON body that is rejected must
 * leave the record without fields, one that is accepted must encode. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/lg_buf.h"
#include "core/lg_json.h"
#include "core/lg_timefmt.h"
#include "pipeline/lg_batch.h"
#include "pipeline/lg_ffi.h"
#include "pipeline/lg_parse.h"
#include "pipeline/lg_record_json.h"
#include "pipeline/lg_regex.h"

static lg_parse_scratch_t *scratch;
static lg_regex_t *re;

static void encode_all(const lg_batch_t *b) {
  lg_buf_t out = LG_BUF_INIT;
  for (uint32_t i = 0; i < b->n; i++)
    if (lg_json_encode_record(&out, b, i) != 0)
      abort();
  lg_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[256];
  if (scratch == NULL) {
    lg_ffi_parse_scratch_create(&scratch);
    const char *p = "^(?<time:rfc3339>\\S+) (?<n:int>\\S+) (?<f:float>\\S+) "
                    "(?<b:bool>\\S+) (?<rest>.*)$";
    if (lg_regex_create(p, strlen(p), 0, &re, err, sizeof err) != 0)
      abort();
  }
  const char *s = (const char *)data;
  lg_batch_t *b = lg_batch_create(64);
  for (int k = 0; k < 6; k++)
    lg_batch_add(b, s, size, 0, 0, size, 0);
  int rc = lg_ffi_parse_rec_json(b, 0, "", 0, "", 0, "", 0, scratch, err,
                                 sizeof err);
  if (rc < 0 && b->recs[0].field_head >= 0)
    abort(); /* rejected JSON must leave the record alone */
  lg_ffi_parse_rec_json(b, 1, "", 0, ".", 1, "p.", 2, scratch, err, sizeof err);
  lg_ffi_parse_rec_logfmt(b, 2, "", 0, scratch);
  lg_ffi_parse_rec_kv(b, 3, "", 0, ";", 1, ":", 1, scratch);
  static const char cols[] = "a\0b:int\0\0c:bool";
  lg_ffi_parse_rec_csv(b, 4, "", 0, cols, sizeof cols - 1, ',', scratch, err,
                       sizeof err);
  lg_regex_rec(b, 5, re, "", 0, err, sizeof err);
  encode_all(b);
  lg_batch_destroy(b);
  /* The time formats: the first line of the input is the format. */
  const char *nl = memchr(s, '\n', size);
  if (nl != NULL) {
    int64_t ns;
    lg_timefmt_parse(s, (size_t)(nl - s), nl + 1, size - (size_t)(nl - s) - 1,
                     0, &ns, err, sizeof err);
    lg_timefmt_parse("nginx", 5, nl + 1, size - (size_t)(nl - s) - 1, 0, &ns,
                     err, sizeof err);
    lg_timefmt_parse("iso8601", 7, nl + 1, size - (size_t)(nl - s) - 1, 0, &ns,
                     err, sizeof err);
  }
  return 0;
}
