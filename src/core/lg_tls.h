/*
 * lg_tls.h - TLS over any byte transport (OpenSSL with memory BIOs).
 *
 * The network code owns the socket (a libuv stream); this module only turns
 * ciphertext that arrived into plaintext and plaintext to send into
 * ciphertext, so one TLS path serves the forward source (server side) and
 * the forward output (client side) on the loop thread without blocking.
 */
#ifndef LG_TLS_H
#define LG_TLS_H

#include <stddef.h>

#include "core/lg_buf.h"

typedef struct lg_tls_ctx lg_tls_ctx_t;
typedef struct lg_tls lg_tls_t;

/*
 * A server context: certificate chain and private key files (PEM). With
 * `ca_file`, clients must present a certificate signed by it. TLS 1.2 is
 * the oldest version offered. Returns NULL with a reason in err.
 */
lg_tls_ctx_t *lg_tls_ctx_server(const char *cert_file, const char *key_file,
                                const char *ca_file, char *err, size_t errlen);

/*
 * A client context. `ca_file` NULL: the system's trust store. `verify` 0
 * turns certificate verification off (for tests and self-signed peers;
 * logged by the caller). `cert_file`/`key_file` (may be NULL): a client
 * certificate. Returns NULL with a reason in err.
 */
lg_tls_ctx_t *lg_tls_ctx_client(const char *ca_file, int verify,
                                const char *cert_file, const char *key_file,
                                char *err, size_t errlen);

/* Frees a context (connections made from it keep their own reference).
 * NULL-safe. */
void lg_tls_ctx_destroy(lg_tls_ctx_t *ctx);

/* One connection's TLS state. `server_name` (client side, may be NULL) is
 * sent as SNI and checked against the certificate when verifying. */
lg_tls_t *lg_tls_create(lg_tls_ctx_t *ctx, int is_server,
                        const char *server_name);
void lg_tls_destroy(lg_tls_t *t); /* NULL-safe */

/*
 * Feeds n bytes of ciphertext from the peer. Decrypted bytes are appended
 * to `plain`; bytes the TLS layer must send (handshake, alerts) to `wire`.
 * Returns 0, or -EPROTO with the TLS library's reason in err.
 */
int lg_tls_feed(lg_tls_t *t, const char *in, size_t n, lg_buf_t *plain,
                lg_buf_t *wire, char *err, size_t errlen);

/*
 * Starts the handshake (client side) or continues it: appends what must be
 * sent to `wire`. Returns 0 or -EPROTO.
 */
int lg_tls_handshake(lg_tls_t *t, lg_buf_t *wire, char *err, size_t errlen);

/* True once the handshake is complete. */
int lg_tls_ready(const lg_tls_t *t);

/*
 * Encrypts n bytes of plaintext and appends the records to `wire`. Before
 * the handshake is complete the plaintext is kept and sent once it is.
 * Returns 0, -ENOMEM or -EPROTO.
 */
int lg_tls_write(lg_tls_t *t, const char *in, size_t n, lg_buf_t *wire,
                 char *err, size_t errlen);

#endif
