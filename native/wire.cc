#include "wire.h"

#include <algorithm>

extern "C" {
#include <fastcgi.h>
}

namespace fcgi {

namespace {

struct Header {
  int version, type, id;
  size_t content, padding;
};

Header ReadHeader(const unsigned char* h) {
  return Header{h[0], h[1], (h[2] << 8) | h[3], (static_cast<size_t>(h[4]) << 8) | h[5],
                static_cast<size_t>(h[6])};
}

// The name-value pairs of FCGI_PARAMS, fed the content of its records as it
// arrives, checked as libfcgi's ReadParams checks them: does a pair break the
// limits (then libfcgi refuses the request as soon as it reads its lengths)?
class PairLengths {
 public:
  explicit PairLengths(const ParamsLimits& limits) : remaining_(limits.max_bytes), max_count_(limits.max_count) {}

  // false: over the limits.
  bool Feed(const unsigned char* p, size_t n) {
    while (n > 0) {
      if (body_ > 0) {  // a name and value, not looked at
        size_t k = static_cast<size_t>(std::min<long long>(body_, static_cast<long long>(n)));
        body_ -= static_cast<long long>(k);
        p += k;
        n -= k;
        continue;
      }
      unsigned char b = *p++;
      n--;
      if (len_bytes_ == 0) {
        // The first byte of a length: its high bit says four bytes.
        value_ = b & 0x7f;
        len_bytes_ = (b & 0x80) ? 3 : 0;
      } else {
        value_ = (value_ << 8) | b;
        len_bytes_--;
      }
      if (len_bytes_ > 0) continue;
      if (!have_name_) {
        name_ = value_;
        have_name_ = true;
        continue;
      }
      have_name_ = false;
      long long name = name_, value = value_;
      if (name >= 0x7fffffff || value >= 0x7fffffff || count_ >= max_count_ || name > remaining_ ||
          value > remaining_ - name)
        return false;
      count_++;
      remaining_ -= name + value;
      body_ = name + value;
    }
    return true;
  }

 private:
  long long remaining_, max_count_;
  long long count_ = 0;
  long long body_ = 0;     // name and value bytes still to pass over
  int len_bytes_ = 0;      // bytes still to come of a four-byte length
  long long value_ = 0;    // the length being read
  long long name_ = 0;
  bool have_name_ = false;
};

}  // namespace

HeadScan ScanHead(const unsigned char* buf, size_t len, const ParamsLimits& limits) {
  size_t at = 0;
  int request_id = -1;  // set by FCGI_BEGIN_REQUEST
  // libfcgi answers something in the head (a management record, a second
  // FCGI_BEGIN_REQUEST) with a write(2): then the head is a worker's, never
  // kComplete (accepted on the poller or the JS thread, where a write to a
  // peer that does not read would block everyone).
  bool answered = false;
  PairLengths pairs(limits);
  for (;;) {
    if (len - at < FCGI_HEADER_LEN) return {HeadScan::kPartial, FCGI_HEADER_LEN - (len - at)};
    Header h = ReadHeader(buf + at);
    size_t next = at + FCGI_HEADER_LEN + h.content + h.padding;
    size_t missing = next > len ? next - len : 0;
    if (h.version != FCGI_VERSION_1) return {HeadScan::kHandOver, 0};
    if (h.type == FCGI_BEGIN_REQUEST) {
      // libfcgi refuses these as soon as it has the header.
      if (h.id == FCGI_NULL_REQUEST_ID || h.content != sizeof(FCGI_BeginRequestBody))
        return {HeadScan::kHandOver, 0};
      // The first starts the request; one more (multiplexing) is answered
      // FCGI_CANT_MPX_CONN and skipped.
      if (request_id >= 0) {
        answered = true;
      } else {
        request_id = h.id;
        // A role libfcgi does not know: once the record is whole, it
        // answers FCGI_UNKNOWN_ROLE and drops the connection.
        int role = missing == 0 ? (buf[at + FCGI_HEADER_LEN] << 8) | buf[at + FCGI_HEADER_LEN + 1] : 0;
        if (missing == 0 && role != FCGI_RESPONDER && role != FCGI_AUTHORIZER && role != FCGI_FILTER)
          return {HeadScan::kHandOver, 0};
      }
    } else if (h.id == FCGI_NULL_REQUEST_ID) {
      // A management record: answered by libfcgi once it is whole. Before
      // the request has begun, that is libfcgi's job now (the peer may be
      // waiting for the answer before it sends anything else).
      if (missing == 0 && request_id < 0) return {HeadScan::kHandOver, 0};
      answered = true;
    } else if (h.id == request_id) {
      // Of the request itself, only FCGI_PARAMS belongs in its head;
      // anything else (FCGI_ABORT_REQUEST, FCGI_STDIN too early) makes
      // libfcgi drop the request without reading further.
      if (h.type != FCGI_PARAMS) return {HeadScan::kHandOver, 0};
      size_t from = at + FCGI_HEADER_LEN;
      size_t to = std::min(len, from + h.content);
      if (from < to && !pairs.Feed(buf + from, to - from)) return {HeadScan::kHandOver, 0};
      if (missing == 0 && h.content == 0)
        return {answered ? HeadScan::kHandOver : HeadScan::kComplete, 0};
    }
    // Otherwise a record of another request id, skipped by libfcgi.
    if (missing > 0) return {HeadScan::kPartial, missing};
    at = next;
  }
}

size_t InputNeed(const RecordState& state, const unsigned char* raw, size_t len, int type,
                 int request_id) {
  // Follows libfcgi's FillBuffProc record by record: each step names the
  // bytes it must have before it can go on.
  size_t at = 0;
  size_t content = state.content, padding = state.padding;
  bool skip = state.skip;
  for (;;) {
    size_t left = len - at;
    if (content > 0) {
      if (!skip) return left > 0 ? 0 : 1;  // any content byte is delivered
      if (left < content) return content - left;  // a skipped record: all of it
      at += content;
      left -= content;
      content = 0;
    }
    if (padding > 0) {
      if (left < padding) return padding - left;
      at += padding;
      left -= padding;
      padding = 0;
    }
    if (left < FCGI_HEADER_LEN) return FCGI_HEADER_LEN - left;
    Header h = ReadHeader(raw + at);
    at += FCGI_HEADER_LEN;
    left -= FCGI_HEADER_LEN;
    if (h.version != FCGI_VERSION_1) return 0;  // an error, at once
    content = h.content;
    padding = h.padding;
    if (h.type == FCGI_BEGIN_REQUEST) {
      // Refused, or (multiplexing) answered FCGI_CANT_MPX_CONN at once.
      return 0;
    } else if (h.id == FCGI_NULL_REQUEST_ID) {
      // A management record: answered once whole.
      return left >= content + padding ? 0 : content + padding - left;
    } else if (h.id != request_id) {
      skip = true;  // another request's: skipped
    } else if (h.type != type) {
      return 0;  // FCGI_ABORT_REQUEST or a protocol error: at once
    } else if (content > 0) {
      skip = false;
    } else {
      // The stream's end, once its padding is skipped.
      return left >= padding ? 0 : padding - left;
    }
    if (content == 0) skip = false;
  }
}

bool EmptyRecordAt(const unsigned char* buf, size_t len, int type, int request_id) {
  if (len < FCGI_HEADER_LEN) return false;
  Header h = ReadHeader(buf);
  return h.version == FCGI_VERSION_1 && h.type == type && h.id == request_id && h.content == 0 &&
         len >= FCGI_HEADER_LEN + h.padding;
}

size_t AbortRecordAt(const unsigned char* buf, size_t len, int request_id) {
  if (len < FCGI_HEADER_LEN) return 0;
  Header h = ReadHeader(buf);
  if (h.version != FCGI_VERSION_1 || h.type != FCGI_ABORT_REQUEST || h.id != request_id) return 0;
  return FCGI_HEADER_LEN + h.content + h.padding;
}

}  // namespace fcgi
