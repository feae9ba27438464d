/*
 * lg_tls.c - see lg_tls.h.
 */
#include "core/lg_tls.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

struct lg_tls_ctx {
  SSL_CTX *ssl;
};

struct lg_tls {
  SSL *ssl;
  BIO *rbio;        /* ciphertext from the peer, written by lg_tls_feed */
  BIO *wbio;        /* ciphertext to the peer, drained into `wire` */
  lg_buf_t pending; /* plaintext written before the handshake finished */
};

static void ssl_reason(char *err, size_t errlen, const char *what) {
  if (err == NULL || errlen == 0)
    return;
  unsigned long e = ERR_get_error();
  char buf[256] = "";
  if (e != 0)
    ERR_error_string_n(e, buf, sizeof buf);
  snprintf(err, errlen, "%s%s%s", what, e ? ": " : "", buf);
  ERR_clear_error();
}

lg_tls_ctx_t *lg_tls_ctx_server(const char *cert_file, const char *key_file,
                                const char *ca_file, char *err, size_t errlen) {
  lg_tls_ctx_t *c = calloc(1, sizeof *c);
  if (c == NULL)
    return NULL;
  c->ssl = SSL_CTX_new(TLS_server_method());
  if (c->ssl == NULL) {
    ssl_reason(err, errlen, "TLS context");
    goto fail;
  }
  SSL_CTX_set_min_proto_version(c->ssl, TLS1_2_VERSION);
  if (SSL_CTX_use_certificate_chain_file(c->ssl, cert_file) != 1) {
    ssl_reason(err, errlen, cert_file);
    goto fail;
  }
  if (SSL_CTX_use_PrivateKey_file(c->ssl, key_file, SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(c->ssl) != 1) {
    ssl_reason(err, errlen, key_file);
    goto fail;
  }
  if (ca_file != NULL) {
    if (SSL_CTX_load_verify_locations(c->ssl, ca_file, NULL) != 1) {
      ssl_reason(err, errlen, ca_file);
      goto fail;
    }
    SSL_CTX_set_verify(c->ssl,
                       SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  }
  return c;
fail:
  lg_tls_ctx_destroy(c);
  return NULL;
}

lg_tls_ctx_t *lg_tls_ctx_client(const char *ca_file, int verify,
                                const char *cert_file, const char *key_file,
                                char *err, size_t errlen) {
  lg_tls_ctx_t *c = calloc(1, sizeof *c);
  if (c == NULL)
    return NULL;
  c->ssl = SSL_CTX_new(TLS_client_method());
  if (c->ssl == NULL) {
    ssl_reason(err, errlen, "TLS context");
    goto fail;
  }
  SSL_CTX_set_min_proto_version(c->ssl, TLS1_2_VERSION);
  if (verify) {
    int ok = ca_file ? SSL_CTX_load_verify_locations(c->ssl, ca_file, NULL)
                     : SSL_CTX_set_default_verify_paths(c->ssl);
    if (ok != 1) {
      ssl_reason(err, errlen, ca_file ? ca_file : "system CA store");
      goto fail;
    }
    SSL_CTX_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);
  } else {
    SSL_CTX_set_verify(c->ssl, SSL_VERIFY_NONE, NULL);
  }
  if (cert_file != NULL &&
      (SSL_CTX_use_certificate_chain_file(c->ssl, cert_file) != 1 ||
       SSL_CTX_use_PrivateKey_file(c->ssl, key_file ? key_file : cert_file,
                                   SSL_FILETYPE_PEM) != 1)) {
    ssl_reason(err, errlen, cert_file);
    goto fail;
  }
  return c;
fail:
  lg_tls_ctx_destroy(c);
  return NULL;
}

void lg_tls_ctx_destroy(lg_tls_ctx_t *ctx) {
  if (ctx == NULL)
    return;
  SSL_CTX_free(ctx->ssl);
  free(ctx);
}

lg_tls_t *lg_tls_create(lg_tls_ctx_t *ctx, int is_server,
                        const char *server_name) {
  lg_tls_t *t = calloc(1, sizeof *t);
  if (t == NULL)
    return NULL;
  t->ssl = SSL_new(ctx->ssl);
  t->rbio = BIO_new(BIO_s_mem());
  t->wbio = BIO_new(BIO_s_mem());
  if (t->ssl == NULL || t->rbio == NULL || t->wbio == NULL) {
    BIO_free(t->rbio);
    BIO_free(t->wbio);
    SSL_free(t->ssl);
    free(t);
    return NULL;
  }
  SSL_set_bio(t->ssl, t->rbio, t->wbio); /* the SSL owns both now */
  if (is_server) {
    SSL_set_accept_state(t->ssl);
  } else {
    SSL_set_connect_state(t->ssl);
    if (server_name != NULL) {
      SSL_set_tlsext_host_name(t->ssl, server_name);
      SSL_set1_host(t->ssl, server_name);
    }
  }
  return t;
}

void lg_tls_destroy(lg_tls_t *t) {
  if (t == NULL)
    return;
  SSL_free(t->ssl);
  lg_buf_free(&t->pending);
  free(t);
}

static int drain(lg_tls_t *t, lg_buf_t *wire) {
  size_t n;
  while ((n = BIO_ctrl_pending(t->wbio)) > 0) {
    if (lg_buf_reserve(wire, n) != 0)
      return -ENOMEM;
    int r = BIO_read(t->wbio, wire->data + wire->len, (int)n);
    if (r <= 0)
      break;
    wire->len += (size_t)r;
  }
  return 0;
}

int lg_tls_ready(const lg_tls_t *t) { return SSL_is_init_finished(t->ssl); }

static int flush_pending(lg_tls_t *t, lg_buf_t *wire, char *err,
                         size_t errlen) {
  if (t->pending.len == 0 || !lg_tls_ready(t))
    return 0;
  size_t n = t->pending.len;
  t->pending.len = 0;
  int rc = lg_tls_write(t, t->pending.data, n, wire, err, errlen);
  return rc;
}

int lg_tls_handshake(lg_tls_t *t, lg_buf_t *wire, char *err, size_t errlen) {
  if (!lg_tls_ready(t)) {
    int r = SSL_do_handshake(t->ssl);
    if (r != 1) {
      int e = SSL_get_error(t->ssl, r);
      if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
        drain(t, wire); /* the alert, so the peer learns why */
        ssl_reason(err, errlen, "TLS handshake");
        return -EPROTO;
      }
    }
  }
  if (drain(t, wire) != 0)
    return -ENOMEM;
  return flush_pending(t, wire, err, errlen);
}

int lg_tls_feed(lg_tls_t *t, const char *in, size_t n, lg_buf_t *plain,
                lg_buf_t *wire, char *err, size_t errlen) {
  while (n > 0) {
    int w = BIO_write(t->rbio, in, (int)(n > (1u << 30) ? (1u << 30) : n));
    if (w <= 0)
      return -ENOMEM;
    in += w;
    n -= (size_t)w;
  }
  int rc = lg_tls_handshake(t, wire, err, errlen);
  if (rc != 0)
    return rc;
  if (!lg_tls_ready(t))
    return 0;
  for (;;) {
    if (lg_buf_reserve(plain, 16384) != 0)
      return -ENOMEM;
    int r = SSL_read(t->ssl, plain->data + plain->len, 16384);
    if (r > 0) {
      plain->len += (size_t)r;
      continue;
    }
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_ZERO_RETURN)
      break;
    if (e == SSL_ERROR_WANT_WRITE)
      continue;
    drain(t, wire);
    ssl_reason(err, errlen, "TLS read");
    return -EPROTO;
  }
  return drain(t, wire);
}

int lg_tls_write(lg_tls_t *t, const char *in, size_t n, lg_buf_t *wire,
                 char *err, size_t errlen) {
  if (!lg_tls_ready(t))
    return lg_buf_append(&t->pending, in, n);
  while (n > 0) {
    int w = SSL_write(t->ssl, in, (int)(n > (1u << 30) ? (1u << 30) : n));
    if (w <= 0) {
      ssl_reason(err, errlen, "TLS write");
      return -EPROTO;
    }
    in += w;
    n -= (size_t)w;
    if (drain(t, wire) != 0)
      return -ENOMEM;
  }
  return drain(t, wire);
}
