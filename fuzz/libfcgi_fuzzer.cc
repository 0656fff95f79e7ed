// libFuzzer harness for the libfcgi we link (deps/libfcgi with
// native/patches applied), driven the way native/server.cc drives it, and
// cross-checked against the addon's own parsing (native/wire.cc). Built with
// -fsanitize=fuzzer,address,undefined by scripts/build-libfuzzer.sh, libfcgi
// instrumented too.
//
// One input is one connection: the bytes are written into one end of a unix
// socketpair, whose write side is then shut down (so libfcgi meets the end of
// the input as a closed connection, never a wait). On the other end, as
// Server::RunAccept does: FCGX_InitRequest(&r, -1, 0), r.ipcFd = fd,
// r.keepConnection = 1, r.detached = 1, FCGX_Accept_r; then the request's
// FCGI_STDIN read to its end (and FCGI_DATA after FCGX_StartFilterData for a
// FILTER), or only part of it and the rest discarded at finish as RunFinish
// does; a little FCGI_STDOUT/FCGI_STDERR; FCGX_Finish_r; and again while the
// peer asked to keep the connection (at most kMaxRequests). A thread reads
// and discards whatever libfcgi writes back, so that its writes never block.
//
// Cross-checks (__builtin_trap() when one fails):
// - ScanHead over the bytes queued before each FCGX_Accept_r (what the
//   server's poller peeks at):
//     kComplete: FCGX_Accept_r never reads past the input (no read(2)
//       returning 0) and writes nothing (the server runs such accepts on
//       its poller or JS thread), and returns the request, or refuses its
//       params (FCGX_PARAMS_ERROR: a pair cut by the stream's end);
//     kPartial: FCGX_Accept_r fails (the input ends before the head does);
//     kHandOver with the limits, but not without them (params over the
//       limits): FCGX_Accept_r fails, with FCGX_PARAMS_ERROR when the head
//       is otherwise complete.
// - InputNeed before each read that may fill libfcgi's buffer (what the
//   server's InputWait computes from FCGX_InputRecordState, libfcgi's
//   buffered bytes and the socket's queue): N > 0, the read meets the end of
//   the input or fails; 0, it does not meet the end, unless it first answered a record (a
//   management record or a second FCGI_BEGIN_REQUEST: libfcgi writes the
//   answer and goes on, as the server expects).
// - EmptyRecordAt where ConsumeBufferedEmptyStdin uses it: the empty
//   FCGI_STDIN record is consumed without a read(2), and the stream is at its
//   end without an error.
//
// Input layout: [0] params limits, [1] buffer sizes and how the app reads,
// then the bytes the peer sends (at most kMaxInput).
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <thread>
#include <vector>

#include "wire.h"

extern "C" {
#include <fastcgi.h>
#include <fcgiapp.h>
}

using fcgi::HeadScan;
using fcgi::ParamsLimits;
using fcgi::RecordState;

#define CHECK(cond)                 \
  do {                              \
    if (!(cond)) __builtin_trap();  \
  } while (0)

namespace {

// What one write(2) into the socket buffer holds at once, with room to
// spare (the default unix socket send buffer is ~208 KiB).
constexpr size_t kMaxInput = 65536;
constexpr int kMaxRequests = 16;

// The connection's descriptor while libfcgi may use it, and what it did on
// it (counted by the --wrap'd read/write below).
int g_conn_fd = -1;
int g_read_eofs = 0;  // read(2) returned 0: libfcgi wanted more than the input held
int g_writes = 0;     // write(2) calls (answers, stdout, end-request)

void ResetCounts() {
  g_read_eofs = 0;
  g_writes = 0;
}

}  // namespace

// The linker sends libfcgi's (and everyone's) read(2)/write(2) here
// (-Wl,--wrap=read,--wrap=write); only the connection's are counted.
extern "C" ssize_t __real_read(int fd, void* buf, size_t n);
extern "C" ssize_t __real_write(int fd, const void* buf, size_t n);
extern "C" ssize_t __wrap_read(int fd, void* buf, size_t n) {
  ssize_t r = __real_read(fd, buf, n);
  if (fd >= 0 && fd == g_conn_fd && r == 0) g_read_eofs++;
  return r;
}
extern "C" ssize_t __wrap_write(int fd, const void* buf, size_t n) {
  if (fd >= 0 && fd == g_conn_fd) g_writes++;
  return __real_write(fd, buf, n);
}

namespace {

ParamsLimits LimitsFrom(uint8_t b) {
  // Mostly small limits, so that the fuzzer meets them; sometimes the
  // server's defaults. Values <= 0 are libfcgi's defaults (as
  // Server::Start mirrors them for ScanHead).
  ParamsLimits l;
  switch (b & 3) {
    case 0:
      l = {1 << 20, 1000};
      break;
    case 1:
      l = {(b >> 2) & 0x3f, 1 + ((b >> 5) & 7)};
      break;
    case 2:
      l = {16 + ((b >> 2) * 37), 1000};
      break;
    default:
      l = {1 << 20, 1 + (b >> 2)};
      break;
  }
  if (l.max_bytes <= 0) l.max_bytes = FCGX_DEFAULT_PARAMS_MAX_BYTES;
  if (l.max_count <= 0) l.max_count = FCGX_DEFAULT_PARAMS_MAX_COUNT;
  return l;
}

constexpr ParamsLimits kNoLimits{0x7fffffffLL, 0x7fffffffLL};

int Avail(FCGX_Stream* s) { return static_cast<int>(s->stop - s->rdNext); }

size_t Peek(int fd, std::vector<unsigned char>& buf, size_t at) {
  int queued = 0;
  if (ioctl(fd, FIONREAD, &queued) != 0 || queued <= 0) return 0;
  buf.resize(at + static_cast<size_t>(queued));
  ssize_t n = recv(fd, buf.data() + at, static_cast<size_t>(queued), MSG_PEEK | MSG_DONTWAIT);
  return n > 0 ? static_cast<size_t>(n) : 0;
}

// One buffer fill of the request's input (FCGX_GetStr of one byte with
// nothing left to deliver: what the server does), after InputNeed says
// whether it can finish with the bytes there are. false: the stream has
// ended or failed.
bool FillStep(FCGX_Request* r, int type) {
  FCGX_Stream* in = r->in;
  if (FCGX_HasSeenEOF(in) == EOF || FCGX_GetError(in) != 0) return false;
  int content = 0, padding = 0, skip = 0;
  CHECK(FCGX_InputRecordState(in, &content, &padding, &skip) == 0);
  CHECK(content >= 0 && padding >= 0);
  // libfcgi's unparsed bytes first (from rdNext: nothing of the current
  // record is left to deliver), then the socket's.
  size_t buffered = static_cast<size_t>(FCGX_InputBuffered(in));
  static std::vector<unsigned char> raw;
  raw.assign(in->rdNext, in->rdNext + buffered);
  size_t len = buffered + Peek(r->ipcFd, raw, buffered);
  RecordState state{static_cast<size_t>(content), static_cast<size_t>(padding), skip != 0};
  size_t need = fcgi::InputNeed(state, raw.data(), len, type, r->requestId);
  ResetCounts();
  char byte;
  FCGX_GetStr(&byte, 1, in);
  if (need > 0) {
    // Short of the bytes it needs: libfcgi must have met the input's end,
    // or failed before it (an FCGI_GET_VALUES pair over the params limits
    // is refused as soon as its lengths are read; InputNeed waits for the
    // whole record, which only delays that failure). Never data, never the
    // stream's end.
    CHECK(g_read_eofs > 0 || FCGX_GetError(in) != 0);
  } else {
    // Everything it needs is there, unless it answered a record first and
    // went on (the peer may be waiting for the answer).
    CHECK(g_read_eofs == 0 || g_writes > 0);
  }
  return true;
}

// Reads the stream to its end or error, or `budget` bytes of it when
// `budget` >= 0 (as the server's reads and RunFinish's discarding do).
void ReadStream(FCGX_Request* r, int type, long budget) {
  FCGX_Stream* in = r->in;
  long consumed = 0;
  // Every step consumes input, answers a record or ends the stream, and the
  // input is finite: the bound is only a guard.
  for (int steps = 0; steps < (1 << 22); steps++) {
    if (budget >= 0 && consumed >= budget) return;
    // A stream that failed while libfcgi was reading a management record
    // in its midst (an FCGI_GET_VALUES pair over the params limits) keeps
    // the rest of that record between rdNext and stop: Avail() > 0, yet
    // FCGX_GetStr returns 0 from then on. The server's RunRead is safe from
    // spinning on it: it checks FCGX_GetError before it reads and stops
    // when a buffer fill returns 0; the harness stops at the stream's end.
    if (FCGX_HasSeenEOF(in) == EOF) return;
    int avail = Avail(in);
    if (avail > 0) {
      char sink[4096];
      long want = std::min<long>(avail, sizeof sink);
      if (budget >= 0) want = std::min(want, budget - consumed);
      consumed += FCGX_GetStr(sink, static_cast<int>(want), in);
      continue;
    }
    if (!FillStep(r, type)) return;
    consumed++;
  }
  CHECK(false);
}

// The server's ConsumeBufferedEmptyStdin, checked: an empty FCGI_STDIN
// record whole in libfcgi's buffer is taken without any read(2).
bool ConsumeBufferedEmptyStdin(FCGX_Request* r) {
  FCGX_Stream* in = r->in;
  if (FCGX_HasSeenEOF(in) == EOF) return FCGX_GetError(in) == 0;
  int buffered = FCGX_InputBuffered(in);
  if (Avail(in) != 0 || buffered < FCGI_HEADER_LEN) return false;
  if (!fcgi::EmptyRecordAt(in->rdNext, static_cast<size_t>(buffered), FCGI_STDIN, r->requestId))
    return false;
  ResetCounts();
  CHECK(FCGX_GetChar(in) == EOF);
  CHECK(FCGX_HasSeenEOF(in) == EOF && FCGX_GetError(in) == 0);
  CHECK(g_read_eofs == 0 && g_writes == 0);
  return true;
}

// One connection: returns when libfcgi closed it, the peer did not ask to
// keep it, or after kMaxRequests.
void Serve(int fd, const ParamsLimits& limits, uint8_t mode) {
  static std::vector<unsigned char> queued;
  for (int i = 0; i < kMaxRequests; i++) {
    queued.clear();
    size_t n = Peek(fd, queued, 0);
    HeadScan scan = fcgi::ScanHead(queued.data(), n, limits);
    HeadScan open = fcgi::ScanHead(queued.data(), n, kNoLimits);

    FCGX_Request r;
    FCGX_InitRequest(&r, -1, 0);
    r.ipcFd = fd;
    r.keepConnection = 1;
    r.detached = 1;
    ResetCounts();
    int rc = FCGX_Accept_r(&r);
    if (scan.kind == HeadScan::kComplete) {
      // ScanHead checks the pairs' lengths, not that the last pair ends
      // with the stream: libfcgi may still refuse the params (at once).
      CHECK(rc == 0 || FCGX_AcceptError(&r) == FCGX_PARAMS_ERROR);
      CHECK(g_read_eofs == 0);
      CHECK(g_writes == 0);
    } else if (scan.kind == HeadScan::kPartial) {
      CHECK(rc != 0);
    } else if (open.kind != HeadScan::kHandOver) {
      CHECK(rc != 0);
      if (open.kind == HeadScan::kComplete) CHECK(FCGX_AcceptError(&r) == FCGX_PARAMS_ERROR);
    }
    if (rc != 0) {
      // libfcgi closed the connection (detached: at once) and then failed
      // to accept on listen_sock -1.
      CHECK(r.ipcFd == -1);
      g_conn_fd = -1;
      FCGX_Free(&r, 0);
      return;
    }
    bool keep = r.keepConnection != 0;
    r.keepConnection = 1;  // the server decides (AfterRequest)

    bool input_done = false;
    if (r.role != FCGI_FILTER) input_done = ConsumeBufferedEmptyStdin(&r);
    // How the app reads: all of it, a little, or nothing.
    int how = (mode >> 4) & 3;
    if (!input_done && how != 3) {
      ReadStream(&r, FCGI_STDIN, how == 2 ? (mode >> 6) * 100 : -1);
      if (r.role == FCGI_FILTER && how != 2 && FCGX_GetError(r.in) == 0 &&
          FCGX_StartFilterData(r.in) == 0) {
        ReadStream(&r, FCGI_DATA, -1);
      }
    }
    input_done = FCGX_HasSeenEOF(r.in) == EOF && FCGX_GetError(r.in) == 0;
    if (!input_done && keep && r.role != FCGI_FILTER && FCGX_GetError(r.in) == 0) {
      // RunFinish: discard the rest of FCGI_STDIN, up to a bound.
      ReadStream(&r, FCGI_STDIN, 1 << 20);
    }

    static const char kBody[] = "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nok\n";
    FCGX_PutStr(kBody, sizeof kBody - 1, r.out);
    if (mode & 0x40) FCGX_PutStr("note\n", 5, r.err);
    r.appStatus = i;
    FCGX_Finish_r(&r);  // closes the connection on an error
    if (r.ipcFd < 0) {
      g_conn_fd = -1;
      return;
    }
    if (!keep) return;
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // As InitLibfcgiOnce: FCGX_Init installs handlers for SIGPIPE, SIGUSR1
  // and SIGTERM; keep the process's own.
  const int sigs[] = {SIGPIPE, SIGUSR1, SIGTERM};
  struct sigaction saved[3];
  for (int i = 0; i < 3; i++) sigaction(sigs[i], nullptr, &saved[i]);
  if (FCGX_Init() != 0) abort();
  for (int i = 0; i < 3; i++) sigaction(sigs[i], &saved[i], nullptr);
  signal(SIGPIPE, SIG_IGN);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  ParamsLimits limits = LimitsFrom(data[0]);
  FCGX_SetParamsLimits(static_cast<int>(limits.max_bytes), static_cast<int>(limits.max_count));
  uint8_t mode = data[1];
  // libfcgi's stream buffers (patch 0008): the server's 64 KiB, libfcgi's
  // 8 KiB, or small ones that cut records at every place.
  static const int kInSizes[] = {65536, 8192, 32, 200};
  FCGX_SetStreamBufferSizes(kInSizes[mode & 3], (mode & 4) ? 32 : 65536);
  const uint8_t* wire = data + 2;
  size_t n = std::min(size - 2, kMaxInput);

  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) abort();
  int fd = sv[0], peer = sv[1];
  int big = 1 << 20;
  setsockopt(peer, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
  for (size_t at = 0; at < n;) {
    ssize_t w = send(peer, wire + at, n - at, MSG_NOSIGNAL);
    if (w <= 0) abort();  // cannot block: the whole input fits
    at += static_cast<size_t>(w);
  }
  shutdown(peer, SHUT_WR);
  // Whatever libfcgi writes back, read and dropped until it closes.
  std::thread drain([peer] {
    char sink[65536];
    while (recv(peer, sink, sizeof sink, 0) > 0) {
    }
  });

  g_conn_fd = fd;
  Serve(fd, limits, mode);
  if (g_conn_fd >= 0) close(fd);
  g_conn_fd = -1;
  drain.join();
  close(peer);
  return 0;
}
