/* libFuzzer target: the cri framer (see framing_fuzz.h). */
#include "framing_fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  return fuzz_framing(LG_FORMAT_CRI, data, size);
}
