/*
 * lg_forward_conf.h - the forward source's part of a source's config
 * (sources.X with type = "forward"), filled by the config loader
 * (config/lg_config_forward.c) and read by the source type.
 */
#ifndef LG_FORWARD_CONF_H
#define LG_FORWARD_CONF_H

#include <stddef.h>
#include <stdint.h>

/* Strings and arrays are owned. */
typedef struct lg_fwd_src_conf {
  char *host;
  int port; /* -1: no TCP listener */
  char *unix_path;
  int unix_mode;
  int udp_heartbeat;
  char *shared_key;
  char *self_hostname;
  char **user_names, **user_passwords; /* users = { name = "password" } */
  size_t nusers;
  char *tls_cert, *tls_key, *tls_ca;
  char *tag_key; /* "" : the tag is not kept */
  char **body_keys;
  size_t nbody_keys;
  uint64_t max_message_bytes;
  uint64_t max_decompressed_bytes;
  uint32_t max_connections;
  uint64_t max_buffered_bytes;
  uint64_t message_timeout_ms;
  uint64_t idle_timeout_ms;
} lg_fwd_src_conf_t;

/* Frees the conf and what it holds. NULL-safe. */
void lg_fwd_src_conf_free(lg_fwd_src_conf_t *c);

/* True when a and b configure the same source (for hot reload). */
int lg_fwd_src_conf_equal(const lg_fwd_src_conf_t *a,
                          const lg_fwd_src_conf_t *b);

#endif
