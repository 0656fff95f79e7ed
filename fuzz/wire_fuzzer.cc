// libFuzzer harness for the addon's own parsing code (native/wire.cc):
// ScanHead, InputNeed, EmptyRecordAt, AbortRecordAt. Built with
// -fsanitize=fuzzer,address,undefined by scripts/build-libfuzzer.sh.
//
// Besides "no crash, no sanitizer report", it checks the promises the server
// builds on (native/server.cc), calling __builtin_trap() when one breaks:
//
// ScanHead (the server peeks at what has arrived and rescans only once
// `need` more bytes are queued), over every prefix of the input:
//   - kPartial has need >= 1 and at most one record's length (header,
//     content, padding);
//   - kComplete and kHandOver are final: every longer prefix gives the same;
//   - within the window a kPartial names, the next prefix is kPartial with
//     need - 1, or kHandOver (the params pair lengths are checked as their
//     bytes arrive, before the record is whole), never kComplete;
//   - tighter limits never turn a hand-over into anything else, nor make a
//     complete head more complete (limits monotone).
// InputNeed (a parked read waits until `need` more bytes are queued):
//   - 0 is final: every longer prefix gives 0;
//   - N > 0 counts exactly: the next prefix gives N - 1 (N > 1);
//   - N is at most one record's length (content, padding or header).
// EmptyRecordAt: true only for a whole record header matching type and id,
//   final once true, and then InputNeed from a record boundary is 0 (the
//   stream's end is there).
// AbortRecordAt: 0 or the whole record's length (8..8+65535+255), the same
//   for every prefix of 8 bytes or more, and then InputNeed from a record
//   boundary is 0 (libfcgi fails the read at once).
//
// Input layout: 8 bytes of settings, then the raw bytes.
//   [0] params limits, [1..2] request id, [3] stream type,
//   [4..5] RecordState.content, [6] RecordState.padding, [7] RecordState.skip
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <vector>

#include "wire.h"

extern "C" {
#include <fastcgi.h>
}

using fcgi::HeadScan;
using fcgi::ParamsLimits;
using fcgi::RecordState;

namespace {

// The longest any single step can ask for: one record's header, content and
// padding.
constexpr size_t kMaxRecord = FCGI_HEADER_LEN + 65535 + 255;

#define CHECK(cond)                 \
  do {                              \
    if (!(cond)) __builtin_trap();  \
  } while (0)

ParamsLimits LimitsFrom(uint8_t b) {
  // Mostly small limits, so that the fuzzer meets them; sometimes the
  // server's defaults.
  switch (b & 3) {
    case 0:
      return {1 << 20, 1000};
    case 1:
      return {(b >> 2) & 0x3f, 1 + ((b >> 5) & 7)};
    case 2:
      return {16 + ((b >> 2) * 37), 1000};
    default:
      return {1 << 20, 1 + (b >> 2)};
  }
}

constexpr ParamsLimits kNoLimits{0x7fffffffLL, 0x7fffffffLL};

void CheckScanHead(const unsigned char* raw, size_t n, const ParamsLimits& limits) {
  std::vector<HeadScan> at(n + 1), open(n + 1);
  for (size_t len = 0; len <= n; len++) {
    at[len] = ScanHead(raw, len, limits);
    open[len] = ScanHead(raw, len, kNoLimits);
  }
  for (size_t len = 0; len <= n; len++) {
    const HeadScan& r = at[len];
    if (r.kind == HeadScan::kPartial) CHECK(r.need >= 1 && r.need <= kMaxRecord);
    // Limits monotone.
    if (open[len].kind == HeadScan::kHandOver) CHECK(r.kind == HeadScan::kHandOver);
    if (r.kind == HeadScan::kComplete) CHECK(open[len].kind == HeadScan::kComplete);
    if (len == n) break;
    const HeadScan& next = at[len + 1];
    if (r.kind != HeadScan::kPartial) {
      CHECK(next.kind == r.kind);
    } else if (r.need > 1) {
      if (next.kind == HeadScan::kPartial) {
        CHECK(next.need == r.need - 1);
      } else {
        // Only the params pair check may decide before the record is whole
        // (a pair is refused as soon as its lengths are in): never a
        // complete head.
        CHECK(next.kind == HeadScan::kHandOver);
      }
    }
  }
}

void CheckInput(const RecordState& state, const unsigned char* raw, size_t n, int type, int id) {
  size_t prev = 0;
  for (size_t len = 0; len <= n; len++) {
    size_t need = fcgi::InputNeed(state, raw, len, type, id);
    CHECK(need <= kMaxRecord);
    if (len > 0) {
      if (prev == 0) CHECK(need == 0);
      if (prev > 1) CHECK(need == prev - 1);
    }
    prev = need;
  }
}

void CheckRecordAt(const unsigned char* raw, size_t n, int type, int id) {
  const RecordState boundary{0, 0, false};
  bool was_empty = false;
  size_t abort_len = 0;
  for (size_t len = 0; len <= n; len++) {
    bool empty = fcgi::EmptyRecordAt(raw, len, type, id);
    if (empty) {
      CHECK(len >= FCGI_HEADER_LEN);
      CHECK(raw[0] == FCGI_VERSION_1 && raw[1] == type && ((raw[2] << 8) | raw[3]) == id &&
            raw[4] == 0 && raw[5] == 0 && len >= FCGI_HEADER_LEN + raw[6]);
      // The stream's end is whole: a read returns at once.
      CHECK(fcgi::InputNeed(boundary, raw, len, type, id) == 0);
    }
    if (was_empty) CHECK(empty);
    was_empty = empty;

    size_t abort = fcgi::AbortRecordAt(raw, len, id);
    if (len < FCGI_HEADER_LEN) {
      CHECK(abort == 0);
    } else {
      if (len == FCGI_HEADER_LEN) abort_len = abort;
      CHECK(abort == abort_len);
      CHECK(abort == 0 || (abort >= FCGI_HEADER_LEN && abort <= kMaxRecord));
      // Request ids are never 0 (libfcgi refuses such a FCGI_BEGIN_REQUEST);
      // an abort of the request fails its read at once.
      if (abort > 0 && id != FCGI_NULL_REQUEST_ID)
        CHECK(fcgi::InputNeed(boundary, raw, len, type, id) == 0);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  ParamsLimits limits = LimitsFrom(data[0]);
  // Mostly request id 1 (what the seeds and web servers use).
  int id = data[1] >= 0xc0 ? ((data[1] & 0x3f) << 8 | data[2]) : 1;
  int type = (data[3] & 1) ? FCGI_DATA : FCGI_STDIN;
  RecordState state{static_cast<size_t>((data[4] << 8) | data[5]), data[6], (data[7] & 1) != 0};
  if (data[7] & 2) state = RecordState{0, 0, false};  // often at a record boundary
  const unsigned char* raw = data + 8;
  size_t n = size - 8;

  CheckScanHead(raw, n, limits);
  CheckInput(state, raw, n, type, id);
  CheckRecordAt(raw, n, type, id);
  return 0;
}
