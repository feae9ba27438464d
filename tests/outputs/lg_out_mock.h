/* The conformance suite's `mock` output type (lg_out_mock.c). */
#ifndef LG_OUT_MOCK_H
#define LG_OUT_MOCK_H

#include "core/lg_buf.h"
#include "outputs/lg_output.h"

extern const lg_output_type_t lg_out_mock;

/* What the mock delivered: the records' JSON lines, in delivery order. */
extern lg_buf_t lg_mock_delivered;

/* While set, every request is answered "retry". */
extern int lg_mock_down;

#endif
