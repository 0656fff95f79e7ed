// Decisions the addon makes by looking at raw FastCGI bytes before libfcgi
// reads them: has a request's head arrived, would a read of a request's input
// wait for the peer. Pure functions over a byte buffer (no system calls, no
// libfcgi state), so that they can be tested and fuzzed on their own
// (fuzz/wire_fuzzer.cc).
//
// Why they exist: libfcgi reads with blocking read(2) calls and keeps reading
// until it has a whole record header, a whole record it skips, a record's
// padding. A peer that stops sending in the middle of one of those holds the
// thread that called libfcgi until readTimeout. The addon calls libfcgi only
// when these functions say that the bytes it needs are all there; until then
// the connection waits in the poller (epoll), which costs no thread.
#ifndef LIBFCGI_NATIVE_WIRE_H_
#define LIBFCGI_NATIVE_WIRE_H_

#include <stddef.h>

namespace fcgi {

// Where a connection's next request head stands in the bytes received so far
// (FCGX_Accept_r reads FCGI_BEGIN_REQUEST, then FCGI_PARAMS records up to the
// empty one; records of other request ids and management records on the way
// are consumed by libfcgi).
struct HeadScan {
  enum Kind {
    // The whole head is there (management records aside): FCGX_Accept_r
    // returns without waiting and writes nothing. Safe on any thread.
    kComplete,
    // libfcgi's turn now, although it may wait for more: a complete
    // management record it must answer, or bytes it will refuse at once (a
    // wrong version, a malformed FCGI_BEGIN_REQUEST or one of a role it
    // does not know, a record of the request's own id that is not
    // FCGI_PARAMS, params over the limits); or a whole head in which libfcgi
    // answers something (a management record, a second FCGI_BEGIN_REQUEST:
    // a write(2), for a worker to make).
    kHandOver,
    // More bytes are needed: at least `need` more (the rest of the record
    // being received) before anything can change.
    kPartial,
  };
  Kind kind;
  size_t need;  // kPartial only
};

// libfcgi's limits on a request's params (FCGX_SetParamsLimits, patch 0002):
// a pair past them is refused as soon as its lengths are read, so a head
// that breaks them is libfcgi's at once (kHandOver), whatever follows.
struct ParamsLimits {
  long long max_bytes;  // names and values, all pairs together
  long long max_count;  // pairs
};

HeadScan ScanHead(const unsigned char* buf, size_t len, const ParamsLimits& limits);

// The state of a libfcgi input stream's current record (FCGX_InputRecordState,
// native/patches/0010): content bytes not yet read from the connection,
// padding bytes not yet skipped, and whether the content is being skipped
// (a record of another request).
struct RecordState {
  size_t content;
  size_t padding;
  bool skip;
};

// How many more bytes a read of a request's input stream (FCGI_STDIN or
// FCGI_DATA: `type`) needs before libfcgi can return without waiting: 0 when
// it returns at once (content to deliver, the stream's end, or an error it
// detects) or must go on at once (a whole management record or a second
// FCGI_BEGIN_REQUEST, which it answers: the peer may wait for the answer),
// else the count of bytes still missing. `raw` holds the bytes
// libfcgi has buffered but not yet parsed, followed by those waiting in the
// socket. Call it only when the stream has no content left to deliver from
// its buffer (rdNext == stop).
size_t InputNeed(const RecordState& state, const unsigned char* raw, size_t len, int type,
                 int request_id);

// Is the record at `buf` an empty stream record (`type`) of `request_id`,
// whole with its padding within `len` bytes?
bool EmptyRecordAt(const unsigned char* buf, size_t len, int type, int request_id);

// If `buf` starts with the header of an FCGI_ABORT_REQUEST for `request_id`:
// the record's whole length (header, content, padding); else 0.
size_t AbortRecordAt(const unsigned char* buf, size_t len, int request_id);

}  // namespace fcgi

#endif  // LIBFCGI_NATIVE_WIRE_H_
