/*
 * lg_source_file.h - the `file` source type (lg_source.h): files named by
 * globs, read by the tailer group (lg_source_tail.h). Its options and
 * their parsing are its own (lg_source_file.c).
 */
#ifndef LG_SOURCE_FILE_H
#define LG_SOURCE_FILE_H

#include "sources/tail/lg_tail_conf.h"

/* A `file` source's conf (lg_conf_source_t.type_conf). */
typedef struct lg_file_conf {
  lg_tail_conf_t tail; /* paths, exclude, read_from, format, limits,
                          multiline */
  int k8s_downward;    /* k8s = "downward": pod metadata from the
                          downward-API environment (sidecar) */
} lg_file_conf_t;

#endif
