#include "core/lg_time.h"

#include <errno.h>
#include <time.h>

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
 * civil-from-days algorithm, public domain), valid for all years here. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = (unsigned)(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = (unsigned)(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

/* Days in month `m` (1-12) of year `y`, proleptic Gregorian. */
static unsigned month_days(unsigned y, unsigned m) {
  static const unsigned char d[12] = {31, 28, 31, 30, 31, 30,
                                      31, 31, 30, 31, 30, 31};
  if (m == 2 && y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))
    return 29;
  return d[m - 1];
}

static inline void put2(char *p, unsigned v) {
  p[0] = (char)('0' + v / 10);
  p[1] = (char)('0' + v % 10);
}

size_t lg_time_format_rfc3339(int64_t ns, char out[LG_TIME_RFC3339_MAX]) {
  int64_t secs = ns / 1000000000;
  int64_t frac = ns % 1000000000;
  if (frac < 0) {
    frac += 1000000000;
    secs -= 1;
  }
  int64_t days = secs / 86400;
  int64_t sod = secs % 86400;
  if (sod < 0) {
    sod += 86400;
    days -= 1;
  }
  int64_t y;
  unsigned m, d;
  civil_from_days(days, &y, &m, &d);
  if (y < 0)
    y = 0;
  if (y > 9999)
    y = 9999;
  char *p = out;
  put2(p, (unsigned)(y / 100));
  put2(p + 2, (unsigned)(y % 100));
  p[4] = '-';
  put2(p + 5, m);
  p[7] = '-';
  put2(p + 8, d);
  p[10] = 'T';
  put2(p + 11, (unsigned)(sod / 3600));
  p[13] = ':';
  put2(p + 14, (unsigned)(sod / 60 % 60));
  p[16] = ':';
  put2(p + 17, (unsigned)(sod % 60));
  p[19] = '.';
  for (int k = 28; k >= 20; k--) {
    p[k] = (char)('0' + frac % 10);
    frac /= 10;
  }
  p[29] = 'Z';
  p[30] = '\0';
  return 30;
}

static int digits(const char *s, int n, unsigned *out) {
  unsigned v = 0;
  for (int k = 0; k < n; k++) {
    unsigned c = (unsigned char)s[k] - '0';
    if (c > 9)
      return -1;
    v = v * 10 + c;
  }
  *out = v;
  return 0;
}

int lg_time_parse_rfc3339(const char *s, size_t len, int64_t *ns) {
  unsigned y, mo, d, h, mi, se;
  if (len < 20 || digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &mo) ||
      s[7] != '-' || digits(s + 8, 2, &d) ||
      (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || digits(s + 11, 2, &h) ||
      s[13] != ':' || digits(s + 14, 2, &mi) || s[16] != ':' ||
      digits(s + 17, 2, &se))
    return -EINVAL;
  /* RFC 3339 5.7: the day exists in its month (no February 30). */
  if (mo < 1 || mo > 12 || d < 1 || d > month_days(y, mo) || h > 23 ||
      mi > 59 || se > 60)
    return -EINVAL;
  size_t p = 19;
  int64_t frac = 0;
  if (s[p] == '.') {
    p++;
    /* RFC 3339 allows any number of fraction digits: the first nine are
     * the nanoseconds, the rest are read and dropped (truncated, not
     * rounded: rounding .9999999999 up would carry into the seconds). */
    size_t d0 = p;
    while (p < len && s[p] >= '0' && s[p] <= '9') {
      if (p - d0 < 9)
        frac = frac * 10 + (s[p] - '0');
      p++;
    }
    if (p == d0)
      return -EINVAL;
    for (size_t nd = p - d0; nd < 9; nd++)
      frac *= 10;
  }
  int64_t offset = 0;
  if (p < len && (s[p] == 'Z' || s[p] == 'z')) {
    p++;
  } else if (p + 6 == len && (s[p] == '+' || s[p] == '-') && s[p + 3] == ':') {
    unsigned oh, om;
    if (digits(s + p + 1, 2, &oh) || digits(s + p + 4, 2, &om) || oh > 23 ||
        om > 59)
      return -EINVAL;
    offset = (int64_t)(oh * 3600 + om * 60);
    if (s[p] == '-')
      offset = -offset;
    p += 6;
  } else {
    return -EINVAL;
  }
  if (p != len)
    return -EINVAL;
  int64_t days = days_from_civil(y, mo, d);
  int64_t secs = days * 86400 + h * 3600 + mi * 60 + se - offset;
  /* Nanoseconds in an int64 reach only the years 1678-2262. */
  int64_t out;
  if (__builtin_mul_overflow(secs, (int64_t)1000000000, &out) ||
      __builtin_add_overflow(out, frac, &out))
    return -EINVAL;
  *ns = out;
  return 0;
}

int64_t lg_time_days_from_civil(int64_t y, unsigned m, unsigned d) {
  return days_from_civil(y, m, d);
}

int64_t lg_time_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
