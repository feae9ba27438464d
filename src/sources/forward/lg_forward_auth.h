/*
 * lg_forward_auth.h - the Fluent forward shared-key handshake
 * (HELO / PING / PONG), both sides: the forward source is the server, the
 * forward output the client.
 *
 * Spec: Forward Protocol Specification v1, "Handshake Messages":
 *   server -> ["HELO", {"nonce": str|bin, "auth": str|bin, "keepalive": bool}]
 *   client -> ["PING", client_hostname, shared_key_salt,
 *              hex(sha512(shared_key_salt + client_hostname + nonce +
 *                         shared_key)),
 *              username, hex(sha512(auth_salt + username + password))]
 *   server -> ["PONG", auth_result, reason, server_hostname,
 *              hex(sha512(shared_key_salt + server_hostname + nonce +
 *                         shared_key))]
 * Digests are lowercase hex SHA-512 over the raw bytes (OpenSSL). With no
 * user authentication the server's "auth" is "" and the client sends ""
 * for username and password digest. Like fluentd, the client refuses a
 * server that reports the client's own hostname.
 */
#ifndef LG_FORWARD_AUTH_H
#define LG_FORWARD_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "core/lg_buf.h"

#define LG_FWD_NONCE_LEN 16
#define LG_FWD_SHA512_HEX 128

/* The hostname this side sends in the handshake (PING's client_hostname,
 * PONG's server_hostname) into out[cap]: `configured` (self_hostname) when
 * not NULL, else the host's name (gethostname), else "lugger". */
void lg_fwd_auth_self_hostname(const char *configured, char *out, size_t cap);

/* One user of the server's user authentication. */
typedef struct lg_fwd_user {
  const char *username;
  const char *password;
} lg_fwd_user_t;

/* Server side of one connection's handshake. */
typedef struct lg_fwd_auth_server {
  const char *shared_key;
  const char *self_hostname;
  const lg_fwd_user_t *users; /* NULL/0: no user authentication */
  size_t nusers;
  unsigned char nonce[LG_FWD_NONCE_LEN];
  unsigned char auth_salt[LG_FWD_NONCE_LEN];
} lg_fwd_auth_server_t;

/* Fills nonce (and auth_salt when users are configured) with random bytes
 * and appends the HELO message to out. Returns 0, -ENOMEM or -EIO (no
 * randomness). */
int lg_fwd_auth_helo(lg_fwd_auth_server_t *a, lg_buf_t *out);

/*
 * Checks a PING (one complete, scanned msgpack object in frame[0..len))
 * and appends the PONG to out: ["PONG", true, "", self_hostname, digest]
 * on success, ["PONG", false, reason, "", ""] on failure. The reason is
 * also copied to `reason` (NUL-terminated). Stores the client's hostname
 * (truncated to host_cap - 1 bytes) in `client_host`.
 * Returns 0 (authenticated), -EACCES (wrong key, user or password),
 * -EBADMSG (not a PING) or -ENOMEM. The server closes the connection
 * after sending the PONG of a failure.
 */
int lg_fwd_auth_ping(const lg_fwd_auth_server_t *a, const char *frame,
                     size_t len, lg_buf_t *out, char *client_host,
                     size_t host_cap, char *reason, size_t reason_cap);

/* Client side of one connection's handshake. */
typedef struct lg_fwd_auth_client {
  const char *shared_key;
  const char *self_hostname;
  const char *username;                 /* NULL: "" */
  const char *password;                 /* NULL: "" */
  unsigned char salt[LG_FWD_NONCE_LEN]; /* shared_key_salt */
  unsigned char nonce[256];             /* from HELO */
  size_t nonce_len;
  int keepalive; /* from HELO */
} lg_fwd_auth_client_t;

/*
 * Reads a HELO (complete msgpack object) and appends the PING to out.
 * Returns 0, -EBADMSG (not a HELO; reason set), -EIO or -ENOMEM.
 */
int lg_fwd_auth_client_helo(lg_fwd_auth_client_t *c, const char *frame,
                            size_t len, lg_buf_t *out, char *reason,
                            size_t reason_cap);

/*
 * Checks the server's PONG. Returns 0 (authenticated), -EACCES (refused
 * by the server, or its digest or hostname is wrong; reason set) or
 * -EBADMSG (not a PONG).
 */
int lg_fwd_auth_client_pong(const lg_fwd_auth_client_t *c, const char *frame,
                            size_t len, char *reason, size_t reason_cap);

/* Writes hex(sha512(concatenation of the n parts)) and a NUL to hex.
 * Returns 0 or -EIO. */
int lg_fwd_sha512_hex(char hex[LG_FWD_SHA512_HEX + 1], const void *const *parts,
                      const size_t *lens, size_t n);

#endif
