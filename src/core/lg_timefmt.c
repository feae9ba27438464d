#include "core/lg_timefmt.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/lg_time.h"

/* The parts of a time read so far. -1: not given. */
typedef struct parts {
  int64_t year;
  int mon, day, yday, hour, min, sec, pm;
  int64_t frac_ns;
  int64_t offset_s;
  int has_epoch;
  int64_t epoch_s;
  int epoch_neg; /* %s had a '-': the fraction counts back too */
} parts_t;

typedef struct cursor {
  const char *s;
  size_t len, pos;
  char *err;
  size_t errlen;
} cursor_t;

static int fail(cursor_t *c, int rc, const char *fmt, ...) {
  if (c->err != NULL && c->errlen > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, c->errlen, fmt, ap);
    va_end(ap);
  }
  return rc;
}

static int nomatch(cursor_t *c, const char *what) {
  if (c->pos >= c->len)
    return fail(c, LG_TIMEFMT_NOMATCH, "expected %s at the end of the text",
                what);
  return fail(c, LG_TIMEFMT_NOMATCH, "expected %s at byte %zu", what,
              c->pos + 1);
}

static int is_space(char ch) {
  return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' ||
         ch == '\v';
}

static int lower(int ch) { return ch >= 'A' && ch <= 'Z' ? ch + 32 : ch; }

/* Reads 1 to `width` digits (a leading space first when `space`). */
static int num(cursor_t *c, int width, int space, int64_t *out) {
  if (space && c->pos < c->len && c->s[c->pos] == ' ')
    c->pos++;
  int64_t v = 0;
  int n = 0;
  while (n < width && c->pos < c->len && c->s[c->pos] >= '0' &&
         c->s[c->pos] <= '9') {
    v = v * 10 + (c->s[c->pos] - '0');
    c->pos++;
    n++;
  }
  if (n == 0)
    return -1;
  *out = v;
  return 0;
}

static int ranged(cursor_t *c, const char *what, int width, int lo, int hi,
                  int space, int *out) {
  size_t at = c->pos;
  int64_t v;
  if (num(c, width, space, &v) != 0)
    return nomatch(c, what);
  if (v < lo || v > hi) {
    c->pos = at;
    return fail(c, LG_TIMEFMT_NOMATCH, "%s out of range at byte %zu", what,
                at + 1);
  }
  *out = (int)v;
  return 0;
}

/* A fraction of a second: 1-9 digits count, more are read and ignored. */
static int fraction(cursor_t *c, int64_t *ns) {
  int64_t v = 0;
  int n = 0;
  while (c->pos < c->len && c->s[c->pos] >= '0' && c->s[c->pos] <= '9') {
    if (n < 9)
      v = v * 10 + (c->s[c->pos] - '0');
    n++;
    c->pos++;
  }
  if (n == 0)
    return nomatch(c, "fraction digits");
  for (int k = n; k < 9; k++)
    v *= 10;
  *ns = v;
  return 0;
}

static const char *const months[12] = {
    "january", "february", "march",     "april",   "may",      "june",
    "july",    "august",   "september", "october", "november", "december"};
static const char *const weekdays[7] = {"sunday",    "monday",   "tuesday",
                                        "wednesday", "thursday", "friday",
                                        "saturday"};

/* Matches a full or three-letter name from `names`, any case; the index.
 * The first three letters pick the name (they differ in both lists), then
 * the rest of the full name is taken when it follows. */
static int name(cursor_t *c, const char *const *names, int n, const char *what,
                int *out) {
  if (c->pos + 3 > c->len)
    return nomatch(c, what);
  const char *p = c->s + c->pos;
  int a = lower((unsigned char)p[0]), b = lower((unsigned char)p[1]),
      d = lower((unsigned char)p[2]);
  for (int k = 0; k < n; k++) {
    const char *nm = names[k];
    if (nm[0] != a || nm[1] != b || nm[2] != d)
      continue;
    size_t l = 3;
    while (nm[l] != '\0' && c->pos + l < c->len &&
           lower((unsigned char)p[l]) == nm[l])
      l++;
    c->pos += nm[l] == '\0' ? l : 3;
    *out = k;
    return 0;
  }
  return nomatch(c, what);
}

/* Z, +hh, +hhmm or +hh:mm, into seconds east of UTC. */
static int zone(cursor_t *c, int64_t *off) {
  if (c->pos < c->len && (c->s[c->pos] == 'Z' || c->s[c->pos] == 'z')) {
    c->pos++;
    *off = 0;
    return 0;
  }
  if (c->pos >= c->len || (c->s[c->pos] != '+' && c->s[c->pos] != '-'))
    return nomatch(c, "a time zone offset (Z, +hh, +hhmm or +hh:mm)");
  int sign = c->s[c->pos] == '-' ? -1 : 1;
  size_t at = c->pos++;
  int64_t h, m = 0;
  size_t d0 = c->pos;
  if (num(c, 2, 0, &h) != 0 || c->pos - d0 != 2) {
    c->pos = at;
    return nomatch(c, "a time zone offset (Z, +hh, +hhmm or +hh:mm)");
  }
  if (c->pos < c->len && c->s[c->pos] == ':')
    c->pos++;
  size_t m0 = c->pos;
  if (num(c, 2, 0, &m) == 0 && c->pos - m0 != 2) {
    c->pos = at;
    return nomatch(c, "a time zone offset (Z, +hh, +hhmm or +hh:mm)");
  }
  if (h > 23 || m > 59) {
    c->pos = at;
    return fail(c, LG_TIMEFMT_NOMATCH,
                "time zone offset out of range at byte %zu", at + 1);
  }
  *off = sign * (h * 3600 + m * 60);
  return 0;
}

static int literal(cursor_t *c, char ch) {
  if (c->pos < c->len && c->s[c->pos] == ch) {
    c->pos++;
    return 0;
  }
  /* A byte that is not printable ASCII (a NUL, part of a UTF-8
   * character) is named by its value: the message is text. */
  char what[16];
  if ((unsigned char)ch >= 0x20 && (unsigned char)ch < 0x7f)
    snprintf(what, sizeof what, "'%c'", ch);
  else
    snprintf(what, sizeof what, "byte 0x%02x", (unsigned char)ch);
  return nomatch(c, what);
}

/* Runs the strftime-style format `f` (`flen` bytes) over the text. */
static int run(cursor_t *c, const char *f, size_t flen, parts_t *p) {
  int rc = 0;
  for (size_t k = 0; k < flen && rc == 0; k++) {
    char ch = f[k];
    if (is_space(ch)) {
      while (c->pos < c->len && is_space(c->s[c->pos]))
        c->pos++;
      continue;
    }
    if (ch != '%') {
      rc = literal(c, ch);
      continue;
    }
    if (++k == flen)
      return fail(c, LG_TIMEFMT_BADFMT, "format ends with a lone '%%'");
    int64_t v = 0;
    int wd;
    switch (f[k]) {
    case 'Y': {
      size_t at = c->pos;
      if (num(c, 4, 0, &v) != 0 || c->pos - at != 4) {
        c->pos = at;
        rc = nomatch(c, "a 4-digit year");
      } else {
        p->year = v;
      }
      break;
    }
    case 'y': {
      int yy;
      rc = ranged(c, "a 2-digit year", 2, 0, 99, 0, &yy);
      p->year = yy < 69 ? 2000 + yy : 1900 + yy;
      break;
    }
    case 'm':
      rc = ranged(c, "a month (1-12)", 2, 1, 12, 0, &p->mon);
      break;
    case 'd':
      rc = ranged(c, "a day (1-31)", 2, 1, 31, 0, &p->day);
      break;
    case 'e':
      rc = ranged(c, "a day (1-31)", 2, 1, 31, 1, &p->day);
      break;
    case 'j':
      rc = ranged(c, "a day of the year (1-366)", 3, 1, 366, 0, &p->yday);
      break;
    case 'H':
      rc = ranged(c, "an hour (0-23)", 2, 0, 23, 0, &p->hour);
      break;
    case 'I':
      rc = ranged(c, "an hour (1-12)", 2, 1, 12, 0, &p->hour);
      if (p->pm < 0)
        p->pm = 0; /* 12-hour clock: AM unless %p says PM */
      break;
    case 'M':
      rc = ranged(c, "a minute (0-59)", 2, 0, 59, 0, &p->min);
      break;
    case 'S':
      rc = ranged(c, "a second (0-60)", 2, 0, 60, 0, &p->sec);
      break;
    case 'f':
    case 'N':
      rc = fraction(c, &p->frac_ns);
      break;
    case 's': {
      int sign = 1;
      if (c->pos < c->len && c->s[c->pos] == '-') {
        sign = -1;
        c->pos++;
      }
      if (num(c, 12, 0, &v) != 0)
        rc = nomatch(c, "seconds since the epoch");
      else if (c->pos < c->len && c->s[c->pos] >= '0' && c->s[c->pos] <= '9')
        /* 13 digits and more are rather milliseconds or finer. */
        rc = fail(c, LG_TIMEFMT_NOMATCH,
                  "more than 12 digits of seconds since the epoch at byte "
                  "%zu (milliseconds? use \"epoch_ms\", \"epoch_us\" or "
                  "\"epoch_ns\")",
                  c->pos + 1);
      p->has_epoch = 1;
      p->epoch_s = sign * v;
      p->epoch_neg = sign < 0;
      break;
    }
    case 'b':
    case 'h':
    case 'B':
      rc = name(c, months, 12, "a month name", &p->mon);
      p->mon++;
      break;
    case 'a':
    case 'A':
      rc = name(c, weekdays, 7, "a weekday name", &wd);
      break;
    case 'p':
      if (c->pos + 2 <= c->len &&
          lower((unsigned char)c->s[c->pos + 1]) == 'm' &&
          (lower((unsigned char)c->s[c->pos]) == 'a' ||
           lower((unsigned char)c->s[c->pos]) == 'p')) {
        p->pm = lower((unsigned char)c->s[c->pos]) == 'p';
        c->pos += 2;
      } else {
        rc = nomatch(c, "AM or PM");
      }
      break;
    case 'z':
      rc = zone(c, &p->offset_s);
      break;
    case 'Z':
      if (c->pos + 3 <= c->len && (memcmp(c->s + c->pos, "UTC", 3) == 0 ||
                                   memcmp(c->s + c->pos, "GMT", 3) == 0))
        c->pos += 3;
      else if (c->pos < c->len && c->s[c->pos] == 'Z')
        c->pos++;
      else
        rc = nomatch(c, "UTC, GMT or Z");
      p->offset_s = 0;
      break;
    case 'T':
      rc = run(c, "%H:%M:%S", 8, p);
      break;
    case 'F':
      rc = run(c, "%Y-%m-%d", 8, p);
      break;
    case 'R':
      rc = run(c, "%H:%M", 5, p);
      break;
    case 'D':
      rc = run(c, "%m/%d/%y", 8, p);
      break;
    case 'n':
    case 't':
      while (c->pos < c->len && is_space(c->s[c->pos]))
        c->pos++;
      break;
    case '%':
      rc = literal(c, '%');
      break;
    default:
      if ((unsigned char)f[k] >= 0x20 && (unsigned char)f[k] < 0x7f)
        return fail(c, LG_TIMEFMT_BADFMT, "unknown directive '%%%c' in format",
                    f[k]);
      return fail(c, LG_TIMEFMT_BADFMT, "unknown directive in format");
    }
  }
  return rc;
}

static int leap(int64_t y) {
  return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int mdays(int64_t y, int m) {
  static const int d[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 ? 28 + leap(y) : d[m - 1];
}

/* Seconds since the epoch of the parts, with year `y`; -1 on a bad date. */
static int date_secs(const parts_t *p, int64_t y, int64_t *secs) {
  int mon = p->mon > 0 ? p->mon : 1;
  int day = p->day > 0 ? p->day : 1;
  int64_t days;
  if (p->yday > 0 && p->mon < 0 && p->day < 0) {
    if (p->yday > 365 + leap(y))
      return -1;
    days = lg_time_days_from_civil(y, 1, 1) + p->yday - 1;
  } else {
    if (day > mdays(y, mon))
      return -1;
    days = lg_time_days_from_civil(y, (unsigned)mon, (unsigned)day);
  }
  int hour = p->hour > 0 ? p->hour : 0;
  if (p->pm >= 0)
    hour = hour % 12 + (p->pm ? 12 : 0);
  *secs = days * 86400 + hour * 3600 + (p->min > 0 ? p->min : 0) * 60 +
          (p->sec > 0 ? p->sec : 0) - p->offset_s;
  return 0;
}

static int to_ns(cursor_t *c, int64_t secs, int64_t frac, int64_t *ns) {
  int64_t out;
  if (__builtin_mul_overflow(secs, (int64_t)1000000000, &out) ||
      __builtin_add_overflow(out, frac, &out))
    return fail(c, LG_TIMEFMT_NOMATCH,
                "time outside the years 1678-2262 (int64 nanoseconds)");
  *ns = out;
  return 0;
}

static int finish(cursor_t *c, const parts_t *p, int64_t now_ns, int64_t *ns) {
  if (c->pos != c->len)
    return fail(c, LG_TIMEFMT_NOMATCH, "unexpected text at byte %zu",
                c->pos + 1);
  if (p->has_epoch) /* "-1.5" is 1.5 s before the epoch, not 0.5 */
    return to_ns(c, p->epoch_s, p->epoch_neg ? -p->frac_ns : p->frac_ns, ns);
  int64_t secs;
  if (p->year >= 0) {
    if (p->year < 1600 || p->year > 2400 || date_secs(p, p->year, &secs) != 0)
      return fail(c, LG_TIMEFMT_NOMATCH, "no such date");
    return to_ns(c, secs, p->frac_ns, ns);
  }
  /* No year (syslog): this year, unless that is more than a day ahead. */
  if (now_ns == LG_TIMEFMT_NOW)
    now_ns = lg_time_now_ns();
  int64_t now_s = now_ns / 1000000000;
  char buf[LG_TIME_RFC3339_MAX];
  lg_time_format_rfc3339(now_ns, buf);
  int64_t y = (buf[0] - '0') * 1000 + (buf[1] - '0') * 100 +
              (buf[2] - '0') * 10 + (buf[3] - '0');
  if (date_secs(p, y, &secs) != 0 || secs > now_s + 86400) {
    /* Feb 29 of a leap year read in a common year also lands here. */
    if (date_secs(p, y - 1, &secs) != 0)
      return fail(c, LG_TIMEFMT_NOMATCH, "no such date");
  }
  return to_ns(c, secs, p->frac_ns, ns);
}

/* A decimal number of `unit_ns` nanoseconds, optional sign and fraction. */
static int epoch(cursor_t *c, int64_t unit_ns, int64_t *ns) {
  int neg = 0;
  if (c->pos < c->len && (c->s[c->pos] == '-' || c->s[c->pos] == '+'))
    neg = c->s[c->pos++] == '-';
  /* The magnitude, unsigned: -9223372036854775808 ns is a time too. */
  uint64_t whole = 0;
  int n = 0;
  while (c->pos < c->len && c->s[c->pos] >= '0' && c->s[c->pos] <= '9') {
    if (__builtin_mul_overflow(whole, (uint64_t)10, &whole) ||
        __builtin_add_overflow(whole, (uint64_t)(c->s[c->pos] - '0'), &whole))
      return fail(c, LG_TIMEFMT_NOMATCH, "number too large");
    c->pos++;
    n++;
  }
  if (n == 0)
    return nomatch(c, "a number");
  /* The fraction, in units of unit_ns / 10^k, to whole nanoseconds. */
  int64_t frac = 0;
  if (c->pos < c->len && c->s[c->pos] == '.') {
    c->pos++;
    int64_t scale = unit_ns;
    int nd = 0;
    while (c->pos < c->len && c->s[c->pos] >= '0' && c->s[c->pos] <= '9') {
      scale /= 10;
      frac += (c->s[c->pos] - '0') * scale;
      c->pos++;
      nd++;
    }
    if (nd == 0)
      return nomatch(c, "fraction digits");
  }
  if (c->pos != c->len)
    return fail(c, LG_TIMEFMT_NOMATCH, "unexpected text at byte %zu",
                c->pos + 1);
  uint64_t out;
  if (__builtin_mul_overflow(whole, (uint64_t)unit_ns, &out) ||
      __builtin_add_overflow(out, (uint64_t)frac, &out) ||
      out > (uint64_t)INT64_MAX + (uint64_t)neg)
    return fail(c, LG_TIMEFMT_NOMATCH,
                "time outside the years 1678-2262 (int64 nanoseconds)");
  *ns = neg && out > 0 ? -(int64_t)(out - 1) - 1 : (int64_t)out;
  return 0;
}

/* ISO 8601 as logs write it: extended or basic date, optional time with
 * optional seconds and fraction (after '.' or ','), optional zone. */
static int iso8601(cursor_t *c, parts_t *p) {
  int64_t v;
  size_t at = c->pos;
  if (num(c, 4, 0, &v) != 0 || c->pos - at != 4)
    return nomatch(c, "a 4-digit year");
  p->year = v;
  int ext = c->pos < c->len && c->s[c->pos] == '-';
  int rc = ext ? run(c, "-%m-%d", 6, p) : 0;
  if (!ext) {
    size_t d0 = c->pos;
    if (num(c, 2, 0, &v) != 0 || c->pos - d0 != 2 || v < 1 || v > 12)
      return nomatch(c, "a 2-digit month");
    p->mon = (int)v;
    d0 = c->pos;
    if (num(c, 2, 0, &v) != 0 || c->pos - d0 != 2 || v < 1 || v > 31)
      return nomatch(c, "a 2-digit day");
    p->day = (int)v;
  }
  if (rc != 0 || c->pos == c->len)
    return rc;
  char sep = c->s[c->pos];
  if (sep != 'T' && sep != 't' && sep != ' ')
    return nomatch(c, "'T' or a space before the time");
  c->pos++;
  if ((rc = ranged(c, "an hour (0-23)", 2, 0, 23, 0, &p->hour)) != 0)
    return rc;
  int textended = c->pos < c->len && c->s[c->pos] == ':';
  if (textended)
    c->pos++;
  if (c->pos < c->len && c->s[c->pos] >= '0' && c->s[c->pos] <= '9') {
    if ((rc = ranged(c, "a minute (0-59)", 2, 0, 59, 0, &p->min)) != 0)
      return rc;
    if (textended && c->pos < c->len && c->s[c->pos] == ':')
      c->pos++;
    if (c->pos < c->len && c->s[c->pos] >= '0' && c->s[c->pos] <= '9') {
      if ((rc = ranged(c, "a second (0-60)", 2, 0, 60, 0, &p->sec)) != 0)
        return rc;
      if (c->pos < c->len && (c->s[c->pos] == '.' || c->s[c->pos] == ',')) {
        c->pos++;
        if ((rc = fraction(c, &p->frac_ns)) != 0)
          return rc;
      }
    }
  }
  if (c->pos < c->len)
    return zone(c, &p->offset_s);
  return 0;
}

/* Checks every directive of a strftime-style format, so that a bad format
 * is reported as such whatever the text. */
static int check_format(cursor_t *c, const char *f, size_t flen) {
  for (size_t k = 0; k < flen; k++) {
    if (f[k] != '%')
      continue;
    if (++k == flen)
      return fail(c, LG_TIMEFMT_BADFMT, "format ends with a lone '%%'");
    if (strchr("YymdejHIMSfNsbhBaApzZTFRDnt%", f[k]) == NULL || f[k] == '\0') {
      if ((unsigned char)f[k] >= 0x20 && (unsigned char)f[k] < 0x7f)
        return fail(c, LG_TIMEFMT_BADFMT, "unknown directive '%%%c' in format",
                    f[k]);
      return fail(c, LG_TIMEFMT_BADFMT, "unknown directive in format");
    }
  }
  return 0;
}

static int d2(const char *p) {
  unsigned a = (unsigned char)p[0] - '0', b = (unsigned char)p[1] - '0';
  return a > 9 || b > 9 ? -1 : (int)(a * 10 + b);
}

/* nginx's and Apache's time_local, "01/May/2024:12:00:01 +0200", read
 * without the format interpreter (most access logs are these). Returns 0,
 * or -1 for anything else: the general path then says what is wrong. */
static int clf_fast(const char *s, size_t len, int64_t *ns) {
  if (len != 26 || s[2] != '/' || s[6] != '/' || s[11] != ':' || s[14] != ':' ||
      s[17] != ':' || s[20] != ' ' || (s[21] != '+' && s[21] != '-'))
    return -1;
  static const char mon[] = "janfebmaraprmayjunjulaugsepoctnovdec";
  int a = lower((unsigned char)s[3]), b = lower((unsigned char)s[4]),
      c = lower((unsigned char)s[5]), m = 0;
  while (m < 12 &&
         !(mon[3 * m] == a && mon[3 * m + 1] == b && mon[3 * m + 2] == c))
    m++;
  int d = d2(s), y1 = d2(s + 7), y2 = d2(s + 9), h = d2(s + 12),
      mi = d2(s + 15), se = d2(s + 18), zh = d2(s + 22), zm = d2(s + 24);
  if (m == 12 || d < 1 || y1 < 0 || y2 < 0 || h < 0 || h > 23 || mi < 0 ||
      mi > 59 || se < 0 || se > 60 || zh < 0 || zh > 23 || zm < 0 || zm > 59)
    return -1;
  int64_t y = y1 * 100 + y2;
  if (y < 1678 || y > 2261 || d > mdays(y, m + 1))
    return -1;
  int64_t off = (zh * 3600 + zm * 60) * (s[21] == '-' ? -1 : 1);
  int64_t secs =
      lg_time_days_from_civil(y, (unsigned)m + 1, (unsigned)d) * 86400 +
      h * 3600 + mi * 60 + se - off;
  *ns = secs * 1000000000;
  return 0;
}

static int is_name(const char *f, size_t flen, const char *n) {
  return strlen(n) == flen && memcmp(f, n, flen) == 0;
}

int lg_timefmt_parse(const char *fmt, size_t flen, const char *s, size_t len,
                     int64_t now_ns, int64_t *ns, char *err, size_t errlen) {
  cursor_t c = {s ? s : "", s ? len : 0, 0, err, errlen};
  parts_t p = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0};
  if (fmt == NULL || flen == 0)
    return fail(&c, LG_TIMEFMT_BADFMT, "empty format");
  if (memchr(fmt, '%', flen) == NULL) {
    /* A name. */
    if (flen == 5 && memcmp(fmt, "nginx", 5) == 0 &&
        clf_fast(c.s, c.len, ns) == 0)
      return 0;
    if (is_name(fmt, flen, "rfc3339")) {
      if (lg_time_parse_rfc3339(c.s, c.len, ns) == 0)
        return 0;
      return fail(&c, LG_TIMEFMT_NOMATCH,
                  "not an RFC 3339 time (YYYY-MM-DDTHH:MM:SS[.f](Z|+hh:mm))");
    }
    if (is_name(fmt, flen, "iso8601")) {
      int rc = iso8601(&c, &p);
      return rc != 0 ? rc : finish(&c, &p, now_ns, ns);
    }
    if (is_name(fmt, flen, "nginx") || is_name(fmt, flen, "apache")) {
      if (clf_fast(c.s, c.len, ns) == 0)
        return 0;
      int rc = run(&c, "%d/%b/%Y:%H:%M:%S %z", 20, &p);
      return rc != 0 ? rc : finish(&c, &p, now_ns, ns);
    }
    if (is_name(fmt, flen, "syslog")) {
      int rc = run(&c, "%b %e %H:%M:%S", 14, &p);
      return rc != 0 ? rc : finish(&c, &p, now_ns, ns);
    }
    if (is_name(fmt, flen, "epoch"))
      return epoch(&c, 1000000000, ns);
    if (is_name(fmt, flen, "epoch_ms"))
      return epoch(&c, 1000000, ns);
    if (is_name(fmt, flen, "epoch_us"))
      return epoch(&c, 1000, ns);
    if (is_name(fmt, flen, "epoch_ns"))
      return epoch(&c, 1, ns);
    return fail(&c, LG_TIMEFMT_BADFMT,
                "unknown time format '%.*s' (a name: rfc3339, iso8601, "
                "nginx, apache, syslog, epoch, epoch_ms, epoch_us, epoch_ns; "
                "or strftime-style text with %%-directives)",
                (int)(flen > 64 ? 64 : flen), fmt);
  }
  int rc = check_format(&c, fmt, flen);
  if (rc == 0)
    rc = run(&c, fmt, flen, &p);
  return rc != 0 ? rc : finish(&c, &p, now_ns, ns);
}
