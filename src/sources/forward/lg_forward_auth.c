/*
 * lg_forward_auth.c - see lg_forward_auth.h.
 */
#include "sources/forward/lg_forward_auth.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <msgpuck.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "core/lg_msgpack.h"

static void say(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say(char *buf, size_t cap, const char *fmt, ...) {
  if (buf == NULL || cap == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, cap, fmt, ap);
  va_end(ap);
}

int lg_fwd_sha512_hex(char hex[LG_FWD_SHA512_HEX + 1], const void *const *parts,
                      const size_t *lens, size_t n) {
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  unsigned char md[64];
  unsigned int mdlen = 0;
  int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha512(), NULL) == 1;
  for (size_t i = 0; ok && i < n; i++)
    ok = EVP_DigestUpdate(ctx, parts[i], lens[i]) == 1;
  ok = ok && EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 64;
  EVP_MD_CTX_free(ctx);
  if (!ok)
    return -EIO;
  static const char digits[] = "0123456789abcdef";
  for (int i = 0; i < 64; i++) {
    hex[2 * i] = digits[md[i] >> 4];
    hex[2 * i + 1] = digits[md[i] & 15];
  }
  hex[LG_FWD_SHA512_HEX] = '\0';
  return 0;
}

/* hex(sha512(salt + host + nonce + key)): the PING and PONG digest. */
static int key_digest(char hex[LG_FWD_SHA512_HEX + 1], const void *salt,
                      size_t salt_len, const char *host, size_t host_len,
                      const void *nonce, size_t nonce_len, const char *key) {
  const void *parts[] = {salt, host, nonce, key};
  size_t lens[] = {salt_len, host_len, nonce_len, strlen(key)};
  return lg_fwd_sha512_hex(hex, parts, lens, 4);
}

/* The client's shared_key_salt goes on the wire as hex text: a str that
 * every peer reads (the spec allows str or bin). */
static void salt_to_hex(char hex[2 * LG_FWD_NONCE_LEN],
                        const unsigned char salt[LG_FWD_NONCE_LEN]) {
  static const char digits[] = "0123456789abcdef";
  for (int i = 0; i < LG_FWD_NONCE_LEN; i++) {
    hex[2 * i] = digits[salt[i] >> 4];
    hex[2 * i + 1] = digits[salt[i] & 15];
  }
}

void lg_fwd_auth_self_hostname(const char *configured, char *out, size_t cap) {
  if (configured != NULL) {
    snprintf(out, cap, "%s", configured);
    return;
  }
  /* A name gethostname cut at cap - 1 bytes ends at the NUL set here. */
  out[cap - 1] = '\0';
  if (gethostname(out, cap - 1) != 0)
    snprintf(out, cap, "lugger");
}

int lg_fwd_auth_helo(lg_fwd_auth_server_t *a, lg_buf_t *out) {
  if (RAND_bytes(a->nonce, sizeof a->nonce) != 1)
    return -EIO;
  int users = a->nusers > 0;
  if (users && RAND_bytes(a->auth_salt, sizeof a->auth_salt) != 1)
    return -EIO;
  if (lg_buf_reserve(out, 64 + 2 * LG_FWD_NONCE_LEN) != 0)
    return -ENOMEM;
  char *p = out->data + out->len;
  p = mp_encode_array(p, 2);
  p = mp_encode_str(p, "HELO", 4);
  p = mp_encode_map(p, 3);
  p = mp_encode_str(p, "nonce", 5);
  p = mp_encode_bin(p, (const char *)a->nonce, sizeof a->nonce);
  p = mp_encode_str(p, "auth", 4);
  p = users ? mp_encode_bin(p, (const char *)a->auth_salt, sizeof a->auth_salt)
            : mp_encode_str(p, "", 0);
  p = mp_encode_str(p, "keepalive", 9);
  p = mp_encode_bool(p, true);
  out->len = (size_t)(p - out->data);
  return 0;
}

static int pong(lg_buf_t *out, int ok, const char *reason, const char *host,
                const char *digest) {
  size_t rl = strlen(reason), hl = strlen(host), dl = strlen(digest);
  if (lg_buf_reserve(out, 32 + rl + hl + dl) != 0)
    return -ENOMEM;
  char *p = out->data + out->len;
  p = mp_encode_array(p, 5);
  p = mp_encode_str(p, "PONG", 4);
  p = mp_encode_bool(p, ok != 0);
  p = mp_encode_str(p, reason, (uint32_t)rl);
  p = mp_encode_str(p, host, (uint32_t)hl);
  p = mp_encode_str(p, digest, (uint32_t)dl);
  out->len = (size_t)(p - out->data);
  return 0;
}

int lg_fwd_auth_ping(const lg_fwd_auth_server_t *a, const char *frame,
                     size_t len, lg_buf_t *out, char *client_host,
                     size_t host_cap, char *reason, size_t reason_cap) {
  const char *p = frame;
  if (host_cap > 0)
    client_host[0] = '\0';
  uint32_t n = 0, l;
  if (len == 0 || mp_typeof(*p) != MP_ARRAY || (n = mp_decode_array(&p)) != 6 ||
      mp_typeof(*p) != MP_STR) {
    say(reason, reason_cap, "expected PING, got %s",
        n ? "an array of another size" : "something else");
    int rc = pong(out, 0, "expected PING", "", "");
    return rc ? rc : -EBADMSG;
  }
  const char *s = mp_decode_str(&p, &l);
  const char *host, *salt, *digest, *user, *pass;
  uint32_t hl, sl, dl, ul, pl;
  if (l != 4 || memcmp(s, "PING", 4) != 0 ||
      (host = lg_mp_decode_strbin(&p, &hl)) == NULL ||
      (salt = lg_mp_decode_strbin(&p, &sl)) == NULL ||
      (digest = lg_mp_decode_strbin(&p, &dl)) == NULL ||
      (user = lg_mp_decode_strbin(&p, &ul)) == NULL ||
      (pass = lg_mp_decode_strbin(&p, &pl)) == NULL) {
    say(reason, reason_cap, "malformed PING");
    int rc = pong(out, 0, "malformed PING", "", "");
    return rc ? rc : -EBADMSG;
  }
  if (host_cap > 0) {
    size_t c = hl < host_cap - 1 ? hl : host_cap - 1;
    memcpy(client_host, host, c);
    client_host[c] = '\0';
  }
  if (a->nusers > 0) {
    int found = 0;
    for (size_t i = 0; i < a->nusers && !found; i++) {
      const lg_fwd_user_t *u = &a->users[i];
      if (strlen(u->username) != ul || memcmp(u->username, user, ul) != 0)
        continue;
      char want[LG_FWD_SHA512_HEX + 1];
      const void *parts[] = {a->auth_salt, u->username, u->password};
      size_t lens[] = {sizeof a->auth_salt, ul, strlen(u->password)};
      if (lg_fwd_sha512_hex(want, parts, lens, 3) != 0)
        return -EIO;
      found = pl == LG_FWD_SHA512_HEX &&
              CRYPTO_memcmp(want, pass, LG_FWD_SHA512_HEX) == 0;
    }
    if (!found) {
      say(reason, reason_cap, "username/password mismatch");
      int rc = pong(out, 0, "username/password mismatch", "", "");
      return rc ? rc : -EACCES;
    }
  }
  char want[LG_FWD_SHA512_HEX + 1];
  if (key_digest(want, salt, sl, host, hl, a->nonce, sizeof a->nonce,
                 a->shared_key) != 0)
    return -EIO;
  if (dl != LG_FWD_SHA512_HEX ||
      CRYPTO_memcmp(want, digest, LG_FWD_SHA512_HEX) != 0) {
    say(reason, reason_cap, "shared_key mismatch");
    int rc = pong(out, 0, "shared_key mismatch", "", "");
    return rc ? rc : -EACCES;
  }
  char mine[LG_FWD_SHA512_HEX + 1];
  if (key_digest(mine, salt, sl, a->self_hostname, strlen(a->self_hostname),
                 a->nonce, sizeof a->nonce, a->shared_key) != 0)
    return -EIO;
  say(reason, reason_cap, "%s", "");
  return pong(out, 1, "", a->self_hostname, mine);
}

int lg_fwd_auth_client_helo(lg_fwd_auth_client_t *c, const char *frame,
                            size_t len, lg_buf_t *out, char *reason,
                            size_t reason_cap) {
  const char *p = frame;
  uint32_t l;
  if (len == 0 || mp_typeof(*p) != MP_ARRAY || mp_decode_array(&p) != 2 ||
      mp_typeof(*p) != MP_STR) {
    say(reason, reason_cap, "expected HELO from the server");
    return -EBADMSG;
  }
  const char *s = mp_decode_str(&p, &l);
  if (l != 4 || memcmp(s, "HELO", 4) != 0 || mp_typeof(*p) != MP_MAP) {
    say(reason, reason_cap, "expected HELO from the server");
    return -EBADMSG;
  }
  uint32_t n = mp_decode_map(&p);
  const char *auth = "";
  uint32_t auth_len = 0;
  int have_nonce = 0;
  c->keepalive = 1;
  for (uint32_t i = 0; i < n; i++) {
    uint32_t kl;
    const char *k = lg_mp_decode_strbin(&p, &kl);
    if (k == NULL) {
      mp_next(&p);
      mp_next(&p);
      continue;
    }
    if (kl == 5 && memcmp(k, "nonce", 5) == 0) {
      uint32_t vl;
      const char *v = lg_mp_decode_strbin(&p, &vl);
      if (v == NULL || vl > sizeof c->nonce) {
        say(reason, reason_cap, "HELO nonce is not a string of <= 256 bytes");
        return -EBADMSG;
      }
      memcpy(c->nonce, v, vl);
      c->nonce_len = vl;
      have_nonce = 1;
    } else if (kl == 4 && memcmp(k, "auth", 4) == 0) {
      const char *v = lg_mp_decode_strbin(&p, &auth_len);
      if (v == NULL) {
        say(reason, reason_cap, "HELO auth is not a string");
        return -EBADMSG;
      }
      auth = v;
    } else if (kl == 9 && memcmp(k, "keepalive", 9) == 0 &&
               mp_typeof(*p) == MP_BOOL) {
      c->keepalive = mp_decode_bool(&p);
    } else {
      mp_next(&p);
    }
  }
  if (!have_nonce) {
    say(reason, reason_cap, "HELO without nonce");
    return -EBADMSG;
  }
  if (RAND_bytes(c->salt, sizeof c->salt) != 1)
    return -EIO;
  char salt_hex[2 * LG_FWD_NONCE_LEN];
  salt_to_hex(salt_hex, c->salt);
  const char *host = c->self_hostname;
  const char *user = c->username ? c->username : "";
  const char *pass = c->password ? c->password : "";
  char digest[LG_FWD_SHA512_HEX + 1], pdigest[LG_FWD_SHA512_HEX + 1];
  if (key_digest(digest, salt_hex, sizeof salt_hex, host, strlen(host),
                 c->nonce, c->nonce_len, c->shared_key) != 0)
    return -EIO;
  /* With a server that asks for user auth (non-empty "auth" salt), send
   * the password digest, as fluentd's out_forward does even for an empty
   * user; otherwise "" as the spec shows. */
  const char *pd = "";
  if (auth_len > 0) {
    const void *parts[] = {auth, user, pass};
    size_t lens[] = {auth_len, strlen(user), strlen(pass)};
    if (lg_fwd_sha512_hex(pdigest, parts, lens, 3) != 0)
      return -EIO;
    pd = pdigest;
  }
  size_t need = 64 + strlen(host) + sizeof salt_hex + LG_FWD_SHA512_HEX * 2 +
                strlen(user);
  if (lg_buf_reserve(out, need) != 0)
    return -ENOMEM;
  char *w = out->data + out->len;
  w = mp_encode_array(w, 6);
  w = mp_encode_str(w, "PING", 4);
  w = mp_encode_str(w, host, (uint32_t)strlen(host));
  w = mp_encode_str(w, salt_hex, sizeof salt_hex);
  w = mp_encode_str(w, digest, LG_FWD_SHA512_HEX);
  w = mp_encode_str(w, user, (uint32_t)strlen(user));
  w = mp_encode_str(w, pd, (uint32_t)strlen(pd));
  out->len = (size_t)(w - out->data);
  return 0;
}

int lg_fwd_auth_client_pong(const lg_fwd_auth_client_t *c, const char *frame,
                            size_t len, char *reason, size_t reason_cap) {
  const char *p = frame;
  uint32_t l;
  if (len == 0 || mp_typeof(*p) != MP_ARRAY || mp_decode_array(&p) != 5 ||
      mp_typeof(*p) != MP_STR) {
    say(reason, reason_cap, "expected PONG from the server");
    return -EBADMSG;
  }
  const char *s = mp_decode_str(&p, &l);
  if (l != 4 || memcmp(s, "PONG", 4) != 0 || mp_typeof(*p) != MP_BOOL) {
    say(reason, reason_cap, "expected PONG from the server");
    return -EBADMSG;
  }
  int ok = mp_decode_bool(&p);
  uint32_t rl, hl, dl;
  const char *r = lg_mp_decode_strbin(&p, &rl);
  const char *host = r ? lg_mp_decode_strbin(&p, &hl) : NULL;
  const char *digest = host ? lg_mp_decode_strbin(&p, &dl) : NULL;
  if (digest == NULL) {
    say(reason, reason_cap, "malformed PONG");
    return -EBADMSG;
  }
  if (!ok) {
    say(reason, reason_cap, "server refused authentication: %.*s", (int)rl, r);
    return -EACCES;
  }
  const char *self = c->self_hostname;
  if (hl == strlen(self) && memcmp(host, self, hl) == 0) {
    say(reason, reason_cap,
        "server hostname equals ours (%s): set a different self_hostname",
        self);
    return -EACCES;
  }
  char salt_hex[2 * LG_FWD_NONCE_LEN];
  salt_to_hex(salt_hex, c->salt);
  char want[LG_FWD_SHA512_HEX + 1];
  if (key_digest(want, salt_hex, sizeof salt_hex, host, hl, c->nonce,
                 c->nonce_len, c->shared_key) != 0)
    return -EIO;
  if (dl != LG_FWD_SHA512_HEX ||
      CRYPTO_memcmp(want, digest, LG_FWD_SHA512_HEX) != 0) {
    say(reason, reason_cap, "server's shared key digest does not match");
    return -EACCES;
  }
  return 0;
}
