/*
 * lg_fingerprint.h - the fingerprint of a file: a 64-bit FNV-1a hash of its
 * first bytes (at most LG_FP_MAX).
 *
 * Together with device and inode it tells a file apart from one that
 * reused its inode or was truncated and rewritten. FNV-1a is a streaming
 * hash, so the fingerprint of a small file is upgraded as the file grows by
 * hashing the new bytes onto the old value; the number of bytes hashed
 * (fp_len) is stored with it and comparisons are made over that length.
 */
#ifndef LG_FINGERPRINT_H
#define LG_FINGERPRINT_H

#include <stddef.h>
#include <stdint.h>

/* At most this many leading bytes of a file are hashed. */
#define LG_FP_MAX 1024u

/* The fingerprint of zero bytes (the FNV-1a 64-bit offset basis). */
#define LG_FP_INIT UINT64_C(0xcbf29ce484222325)

/* Continues hash `h` over `n` more bytes at `p`; returns the new hash.
 * lg_fp_update(LG_FP_INIT, p, n) is the fingerprint of those n bytes. */
static inline uint64_t lg_fp_update(uint64_t h, const void *p, size_t n) {
  const unsigned char *s = p;
  for (size_t i = 0; i < n; i++) {
    h ^= s[i];
    h *= UINT64_C(0x100000001b3); /* the FNV-1a 64-bit prime */
  }
  return h;
}

#endif
