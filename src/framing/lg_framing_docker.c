/*
 * lg_framing_docker.c - parsing one line of Docker's json-file log driver
 * ({"log":"...","stream":"...","time":"..."}) with cJSON, for the framer's
 * docker and auto formats (lg_framing.h). What the framer does with the
 * parsed line (joining pieces, records) stays in lg_framing.c.
 */
#include "framing/lg_framing_internal.h"

#include <errno.h>
#include <string.h>

/* cJSON (1.7) decodes a string into a buffer but reports it as a C
 * string, so a NUL inside `log` would cut the record short. Its decoding,
 * from its source: raw bytes are copied (even NUL, which JSON forbids);
 * `\uXXXX` gives a NUL when the four characters are 0000 or are not all
 * hex digits (parse_hex4 then returns 0); every escape makes the buffer
 * one byte shorter than the text. */

/* The value cJSON's parse_hex4 gives four characters. */
static unsigned hex4(const char *h) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    unsigned c = (unsigned char)h[i], d;
    if (c >= '0' && c <= '9')
      d = c - '0';
    else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
      d = (c | 0x20) - 'a' + 10;
    else
      return 0;
    v = v * 16 + d;
  }
  return v;
}

/* True when a JSON text of `n` bytes may decode to a string with a NUL
 * (a raw NUL, or something like a \u escape that gives 0). */
static int may_have_nul(const char *p, size_t n) {
  if (memchr(p, 0, n) != NULL)
    return 1;
  const char *e = p + n, *q = p;
  while ((q = memchr(q, '\\', (size_t)(e - q))) != NULL) {
    if (e - q >= 6 && q[1] == 'u' && hex4(q + 2) == 0)
      return 1;
    q += 2; /* past the escaped character */
    if (q >= e)
      break;
  }
  return 0;
}

/* For the JSON string text [p, e) (opening quote to just past the closing
 * one): the number of NULs cJSON's decoding holds, and in *bound the bytes
 * cJSON allocated for it minus the terminator. */
static size_t count_nuls(const char *p, const char *e, size_t *bound) {
  size_t k = 0, escapes = 0;
  const char *q = p + 1, *end = e - 1;
  while (q < end) {
    if (*q == '\\') {
      escapes++;
      if (end - q >= 6 && q[1] == 'u') {
        k += hex4(q + 2) == 0;
        q += 6;
      } else {
        q += 2;
      }
    } else {
      k += *q == '\0';
      q++;
    }
  }
  size_t content = (size_t)(end - (p + 1));
  *bound = content > escapes ? content - escapes : 0;
  return k;
}

/* The length of the decoded `log` string `s` of a line that may hold NULs:
 * walks the object's members with cJSON, one value at a time, to find the
 * raw text of `log`, then counts the NULs its decoding holds. Reads of `s`
 * stay within what cJSON allocated whatever the count. */
static size_t docker_log_len(const char *p, size_t n, const char *s) {
  const char *e = p + n, *q = p;
  size_t k = 0, bound = 0;
  int found = 0;
  cJSON *key = NULL, *val = NULL;
  while (q < e && *q != '{')
    q++;
  q++;
  for (;;) {
    while (q < e && ((unsigned char)*q <= ' ' || *q == ','))
      q++; /* cJSON's whitespace is every byte up to the space */
    if (q >= e || *q == '}')
      break;
    const char *end = NULL;
    key = cJSON_ParseWithLengthOpts(q, (size_t)(e - q), &end, 0);
    if (key == NULL || !cJSON_IsString(key) || end == NULL)
      break;
    q = end;
    while (q < e && (unsigned char)*q <= ' ')
      q++;
    if (q >= e || *q != ':')
      break;
    q++;
    const char *vstart = q;
    val = cJSON_ParseWithLengthOpts(q, (size_t)(e - q), &end, 0);
    if (val == NULL || end == NULL)
      break;
    /* Duplicate keys: cJSON's GetObjectItem returns the first one. */
    if (strcmp(key->valuestring, "log") == 0) {
      const char *quote = memchr(vstart, '"', (size_t)(end - vstart));
      if (cJSON_IsString(val) && quote != NULL) {
        k = count_nuls(quote, end, &bound);
        found = 1;
      }
      break;
    }
    cJSON_Delete(key);
    cJSON_Delete(val);
    key = val = NULL;
    q = end;
  }
  cJSON_Delete(key);
  cJSON_Delete(val);
  if (!found) /* cannot happen for text cJSON parsed as a whole */
    return strlen(s);
  size_t len = strnlen(s, bound);
  while (k > 0 && len < bound) {
    k--;
    len++;
    len += strnlen(s + len, bound - len);
  }
  return len;
}

/* Parses one json-file line. Returns the cJSON tree (the caller deletes
 * it; `r->log` points into it), or NULL with *err saying why. */
cJSON *lg__framing_docker_parse(const char *p, size_t n, docker_rec_t *r,
                                const char **err) {
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(p, n, &end, 0);
  if (root == NULL) {
    *err = "docker: invalid JSON";
    return NULL;
  }
  for (const char *q = end; q < p + n; q++) {
    if (*q != ' ' && *q != '\t' && *q != '\r') {
      *err = "docker: invalid JSON";
      goto fail;
    }
  }
  if (!cJSON_IsObject(root)) {
    *err = "docker: not a JSON object";
    goto fail;
  }
  const cJSON *log = cJSON_GetObjectItemCaseSensitive(root, "log");
  if (!cJSON_IsString(log)) {
    *err = "docker: no log string";
    goto fail;
  }
  const cJSON *st = cJSON_GetObjectItemCaseSensitive(root, "stream");
  if (cJSON_IsString(st) && strcmp(st->valuestring, "stdout") == 0) {
    r->stream = 0;
  } else if (cJSON_IsString(st) && strcmp(st->valuestring, "stderr") == 0) {
    r->stream = 1;
  } else {
    *err = "docker: bad stream";
    goto fail;
  }
  const cJSON *tm = cJSON_GetObjectItemCaseSensitive(root, "time");
  if (!cJSON_IsString(tm) ||
      lg__framing_parse_time(tm->valuestring, strlen(tm->valuestring),
                             &r->time_ns) < 0) {
    *err = "docker: bad time";
    goto fail;
  }
  r->log = log->valuestring;
  r->log_len = may_have_nul(p, n) ? docker_log_len(p, n, log->valuestring)
                                  : strlen(log->valuestring);
  return root;
fail:
  cJSON_Delete(root);
  return NULL;
}

/* True when the line is a JSON object with a "log" member. */
int lg__framing_docker_detect(const char *p, size_t n) {
  size_t i = 0;
  while (i < n && (p[i] == ' ' || p[i] == '\t'))
    i++;
  if (i == n || p[i] != '{')
    return 0;
  cJSON *root = cJSON_ParseWithLength(p, n);
  int ok = cJSON_IsObject(root) &&
           cJSON_GetObjectItemCaseSensitive(root, "log") != NULL;
  cJSON_Delete(root);
  return ok;
}
