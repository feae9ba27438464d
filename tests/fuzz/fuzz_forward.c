/* libFuzzer target: the forward source's byte path. The input is a byte
 * stream from a peer: it is cut into messages by the incremental scanner
 * (fed in uneven pieces, as reads arrive), and each complete message is
 * decoded into records and, when it looks like one, checked as a PING. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/lg_msgpack.h"
#include "sources/forward/lg_forward_auth.h"
#include "sources/forward/lg_forward_decode.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *buf = (const char *)data;
  lg_fwd_decode_cfg_t cfg = lg_fwd_decode_defaults;
  cfg.max_decompressed_bytes = 1 << 20;
  lg_buf_t scratch = LG_BUF_INIT;
  lg_mp_scan_t s;
  lg_mp_scan_init(&s);
  size_t start = 0, avail = 0, step = 1;
  while (avail < size) {
    avail += step;
    if (avail > size)
      avail = size;
    step = step * 3 % 17 + 1;
    int rc;
    while ((rc = lg_mp_scan(&s, buf + start, avail - start, 1 << 20)) ==
           LG_MP_COMPLETE) {
      lg_batch_t *b = lg_batch_create(256);
      lg_fwd_msg_t msg;
      char err[256];
      lg_fwd_decode(&cfg, buf + start, s.pos, b, &msg, &scratch, err,
                    sizeof err);
      lg_batch_destroy(b);
      lg_fwd_auth_server_t a;
      memset(&a, 0, sizeof a);
      a.shared_key = "k";
      a.self_hostname = "h";
      lg_buf_t pong = LG_BUF_INIT;
      char host[64], reason[64];
      lg_fwd_auth_ping(&a, buf + start, s.pos, &pong, host, sizeof host, reason,
                       sizeof reason);
      lg_buf_free(&pong);
      start += s.pos;
      lg_mp_scan_init(&s);
    }
    if (rc < 0)
      break;
  }
  lg_buf_free(&scratch);
  return 0;
}
