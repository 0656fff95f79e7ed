#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>

extern "C" {
#include <fastcgi.h>
}

#include "wire.h"

namespace fcgi {

namespace {

constexpr uint64_t kListenId = 1;
constexpr uint64_t kWakeId = 2;
constexpr int kIdleThreadSeconds = 30;
constexpr int kStarvedMs = 2;
// After Close(), how long a connection accepted but not used yet may take to
// bring its first request (a web server sends it right after connecting).
constexpr int kLingerFreshMs = 2000;
// After Close(), a kept connection the web server used within the last
// kHotMs is likely to carry its next request any moment (nginx reuses its
// most recently released upstream connection first): closing it now races
// with that request, which the web server then sees fail ("recv() failed
// (104: Connection reset by peer)") and retries. Such a connection stays for
// one more request (served, then closed right after its FCGI_END_REQUEST)
// or kLingerHotMs, whichever comes first. Colder ones are closed at once:
// they sit at the far end of the web server's pool.
constexpr int kHotMs = 250;
constexpr int kLingerHotMs = 1000;
// The bound on an accept4() that finds the listen socket made blocking by
// another process (see AcceptConnections), through SO_RCVTIMEO.
constexpr int kListenTimeoutMs = 10;
// Shared accept (ShareEntry): a process holding more connections than a
// sibling waits this long before looking again, and at most kShareMaxDeferMs
// in all before it takes the connection itself.
constexpr int kShareDeferStepMs = 1;
constexpr int kShareMaxDeferMs = 20;
// The most of a request head the poller looks at (MSG_PEEK) to tell whether
// it has all arrived. Bigger heads (nginx sends at most ~32 KiB with its
// defaults) are handed to libfcgi as soon as this much is there: a peer
// stalling after that holds a thread until read_timeout_ms.
constexpr size_t kHeadPeekMax = 65536;
// The most of an input stream's next records a worker looks at before
// reading (InputWait): libfcgi's buffer (64 KiB) plus one whole record.
constexpr size_t kInputPeekMax = 65536 + FCGI_HEADER_LEN + 65535 + 255;

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

int Avail(FCGX_Stream* s) { return static_cast<int>(s->stop - s->rdNext); }

// Is the request's FCGI_STDIN already complete in libfcgi's buffer? A web
// server sends a bodiless request's empty FCGI_STDIN record together with
// its params, so libfcgi's first read took it in too. If so, consume it
// (the request's input is then done) without any read(2): only an empty,
// FCGI_STDIN record of this request lying whole (padding included) in the
// buffer qualifies; anything else is left for the app's reads.
bool ConsumeBufferedEmptyStdin(FCGX_Stream* in, int request_id) {
  if (FCGX_HasSeenEOF(in) == EOF) return FCGX_GetError(in) == 0;
  int buffered = FCGX_InputBuffered(in);
  if (Avail(in) != 0 || buffered < FCGI_HEADER_LEN) return false;
  // With nothing of the current record left (Avail 0), the raw bytes of the
  // next record start at rdNext.
  if (!EmptyRecordAt(in->rdNext, static_cast<size_t>(buffered), FCGI_STDIN, request_id)) return false;
  return FCGX_GetChar(in) == EOF && FCGX_HasSeenEOF(in) == EOF && FCGX_GetError(in) == 0;
}

// Bytes waiting in a socket's receive queue.
size_t QueuedBytes(int fd) {
  int n = 0;
  return ioctl(fd, FIONREAD, &n) == 0 && n > 0 ? static_cast<size_t>(n) : 0;
}

// Has a whole request head arrived (ScanHead: kComplete), within the first
// 16 KiB of the socket's queue? Then FCGX_Accept_r neither waits nor writes.
bool RequestHeadArrived(int fd, const ParamsLimits& limits) {
  unsigned char buf[16384];
  ssize_t n = recv(fd, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
  return n > 0 && ScanHead(buf, static_cast<size_t>(n), limits).kind == HeadScan::kComplete;
}

// Would a read of a request's input stream wait for the peer? 0: no (bytes
// to deliver, the stream's end or an error are there, or this cannot be
// told within kInputPeekMax: libfcgi's turn, bounded by read_timeout_ms);
// else how many bytes the socket must hold before it would not.
size_t InputWait(FCGX_Stream* in, int fd, int type, int request_id) {
  if (Avail(in) > 0 || FCGX_HasSeenEOF(in) == EOF || FCGX_GetError(in) != 0) return 0;
  int content = 0, padding = 0, skip = 0;
  if (FCGX_InputRecordState(in, &content, &padding, &skip) != 0) return 0;
  size_t buffered = static_cast<size_t>(FCGX_InputBuffered(in));
  if (content > 0 && !skip) {
    // The common case: more content of the current record.
    if (buffered > 0) return 0;
    pollfd p{fd, POLLIN, 0};
    return poll(&p, 1, 0) > 0 ? 0 : 1;
  }
  RecordState state{static_cast<size_t>(content), static_cast<size_t>(padding), skip != 0};
  // Whatever libfcgi has buffered comes first (raw bytes from rdNext, as
  // nothing of the current record is left to deliver), then the socket's.
  thread_local std::vector<unsigned char> raw;
  raw.resize(std::min(kInputPeekMax, buffered + 4096));
  memcpy(raw.data(), in->rdNext, buffered);
  for (;;) {
    ssize_t n = recv(fd, raw.data() + buffered, raw.size() - buffered, MSG_PEEK | MSG_DONTWAIT);
    size_t queued = n > 0 ? static_cast<size_t>(n) : 0;
    if (n == 0) return 0;  // the peer closed: libfcgi finds the end at once
    size_t need = InputNeed(state, raw.data(), buffered + queued, type, request_id);
    if (need == 0) return 0;
    if (buffered + queued < raw.size()) {
      // A peer that has closed sends no more: libfcgi meets the end at once.
      pollfd p{fd, POLLRDHUP, 0};
      if (poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) return 0;
      return queued + need;
    }
    if (raw.size() >= kInputPeekMax) return 0;
    raw.resize(kInputPeekMax);  // rare: a large record to skip
  }
}

// The 8 bytes of a record header.
void PutHeader(unsigned char* h, int type, int request_id, size_t content, int padding) {
  h[0] = FCGI_VERSION_1;
  h[1] = static_cast<unsigned char>(type);
  h[2] = static_cast<unsigned char>((request_id >> 8) & 0xff);
  h[3] = static_cast<unsigned char>(request_id & 0xff);
  h[4] = static_cast<unsigned char>((content >> 8) & 0xff);
  h[5] = static_cast<unsigned char>(content & 0xff);
  h[6] = static_cast<unsigned char>(padding);
  h[7] = 0;
}

// write(2) all of it on a blocking descriptor; 0 or errno.
int WriteAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return 0;
}

// Our threads run as SCHED_BATCH (Linux): a woken worker does not preempt
// the thread that woke it, so handing work over from the JS thread does not
// cost the JS thread its time slice on a busy machine.
void DeprioritizeWakeups() {
#ifdef SCHED_BATCH
  sched_param param{};
  pthread_setschedparam(pthread_self(), SCHED_BATCH, &param);
#endif
}

// Named for ps/top/perf and the benchmark's per-thread CPU (15 chars at most).
void NameThread(const char* name) {
#ifdef __linux__
  pthread_setname_np(pthread_self(), name);
#endif
}

}  // namespace

int ShareCreate() {
  int fd = memfd_create("libfcgi-share", MFD_CLOEXEC);
  if (fd < 0) return -1;
  if (ftruncate(fd, kShareBlockBytes) < 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

bool ShareClear(int fd, int index) {
  if (index < 0 || index >= kShareEntries) return false;
  // Through the file, not a mapping: the memfd's pages are the ones every
  // worker has mapped.
  char zero[sizeof(ShareEntry)] = {};
  return pwrite(fd, zero, sizeof zero, static_cast<off_t>(index) * sizeof(ShareEntry)) == sizeof zero;
}

int InitLibfcgiOnce() {
  static std::once_flag once;
  static int rc = 0;
  std::call_once(once, [] {
    // FCGX_Init installs handlers for SIGPIPE, SIGUSR1 and SIGTERM where they
    // are at their defaults: a SIGTERM would then no longer end the process.
    // Keep whatever the host process had.
    const int sigs[] = {SIGPIPE, SIGUSR1, SIGTERM};
    struct sigaction saved[3];
    for (int i = 0; i < 3; i++) sigaction(sigs[i], nullptr, &saved[i]);
    rc = FCGX_Init();
    for (int i = 0; i < 3; i++) sigaction(sigs[i], &saved[i], nullptr);
  });
  return rc;
}

Server::Server(int listen_fd, Options options, PostFn post)
    : listen_fd_(listen_fd), options_(std::move(options)), post_(std::move(post)) {
  int hw = static_cast<int>(std::thread::hardware_concurrency());
  int core = options_.core_threads > 0 ? options_.core_threads : std::max(4, 2 * hw);
  core_threads_ = std::max(1, std::min(core, options_.max_threads));
}

Server::~Server() { Destroy(); }

bool Server::Start(SysError* err) {
  int rc = InitLibfcgiOnce();
  if (rc != 0) {
    err->errno_ = rc > 0 ? rc : EINVAL;
    err->syscall_ = "FCGX_Init";
    return false;
  }
  // Process-wide in libfcgi (our patches 0001, 0002 and 0008): the last server
  // started sets them.
  FCGX_SetManagementValues(options_.max_conns, options_.max_reqs, 0);
  FCGX_SetParamsLimits(options_.params_max_bytes, options_.params_max_count);
  FCGX_SetStreamBufferSizes(options_.in_buffer_size, options_.out_buffer_size);
  peek_buf_.resize(kHeadPeekMax);
  params_limits_.max_bytes = options_.params_max_bytes > 0 ? options_.params_max_bytes : FCGX_DEFAULT_PARAMS_MAX_BYTES;
  params_limits_.max_count = options_.params_max_count > 0 ? options_.params_max_count : FCGX_DEFAULT_PARAMS_MAX_COUNT;

  int flags = fcntl(listen_fd_, F_GETFL);
  if (flags < 0 || fcntl(listen_fd_, F_SETFL, flags | O_NONBLOCK) < 0) {
    err->errno_ = errno;
    err->syscall_ = "fcntl";
    return false;
  }
  // O_NONBLOCK is not ours to keep (see AcceptConnections): should the
  // socket be made blocking just before our accept4(), this bounds the wait.
  // The listen socket's own SO_RCVTIMEO applies to accept() only.
  timeval ltv{0, kListenTimeoutMs * 1000};
  setsockopt(listen_fd_, SOL_SOCKET, SO_RCVTIMEO, &ltv, sizeof ltv);
  if (options_.share_fd >= 0) {
    void* p = mmap(nullptr, kShareBlockBytes, PROT_READ | PROT_WRITE, MAP_SHARED, options_.share_fd, 0);
    close(options_.share_fd);
    options_.share_fd = -1;
    if (p == MAP_FAILED) {
      err->errno_ = errno;
      err->syscall_ = "mmap";
      return false;
    }
    share_block_ = static_cast<ShareEntry*>(p);
    if (options_.share_index >= 0 && options_.share_index < kShareEntries) {
      share_ = &share_block_[options_.share_index];
      share_->conns.store(0, std::memory_order_relaxed);
      share_->accepting.store(1, std::memory_order_relaxed);
    }
  }
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) {
    err->errno_ = errno;
    err->syscall_ = "epoll_create1";
    return false;
  }
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) {
    err->errno_ = errno;
    err->syscall_ = "eventfd";
    return false;
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeId;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
  ev.data.u64 = kListenId;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev) < 0) {
    err->errno_ = errno;
    err->syscall_ = "epoll_ctl";
    return false;
  }
  listen_armed_ = true;
  poller_ = std::thread([this] { PollerMain(); });
  return true;
}

// ---------------------------------------------------------------- JS thread

Slot* Server::NewSlot() {
  std::lock_guard<std::mutex> lock(mu_);
  Slot* s = new Slot();
  s->id = next_slot_id_++;
  s->server = this;
  FCGX_InitRequest(&s->req, -1, 0);
  slots_[s->id] = s;
  return s;
}

void Server::ReleaseSlot(Slot* s) {
  std::lock_guard<std::mutex> lock(mu_);
  s->js_alive = false;
  if (s->waiting) {
    waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), s), waiting_.end());
    s->waiting = false;
  }
  if (s->active && !s->finishing) {
    // Collected mid-request: end it so the web server is not left waiting.
    s->finishing = true;
    Op op{OpKind::kFinish};
    Enqueue(s, std::move(op));
  }
  MaybeDelete(s);
}

// A connection may be ready (its request arrived) before a slot waits for
// it: under load, most requests find their slot this way, the JS thread
// asking for the next request right after finishing one. The JS thread then
// claims the connection itself and, when the request's head has arrived,
// runs the accept here (a recv(MSG_PEEK) and a read(), neither blocking)
// rather than waking a worker for it: the completion comes through the
// queue as usual. Measured at 1,024 connections: workers' CPU per request
// 2-6 us -> 0, the JS thread's +1 us.
void Server::Accept(Slot* s) {
  std::vector<Slot*> claimed;
  FromJs([&] { AcceptLocked(s, &claimed); });
  if (!claimed.empty()) AcceptClaimed(claimed);
}

void Server::AcceptLocked(Slot* s, std::vector<Slot*>* claimed) {
  if (s->active || s->waiting) {
    // The JS layer finishes a request before accepting the next one.
    auto* c = new Completion();
    c->slot_id = s->id;
    c->kind = EventKind::kAccept;
    c->status = EBUSY;
    Post(c);
    return;
  }
  if (closed_ && ready_.empty() && lingering_ == 0) {
    auto* c = new Completion();
    c->slot_id = s->id;
    c->kind = EventKind::kAccept;
    c->status = kClosed;
    Post(c);
    return;
  }
  s->waiting = true;
  waiting_.push_back(s);
  Dispatch(claimed);
}

void Server::Read(Slot* s, int stream, size_t max) {
  FromJs([&] {
    Op op{OpKind::kRead};
    op.stream = stream;
    op.max = max;
    Enqueue(s, std::move(op));
  });
}

void Server::Write(Slot* s, int stream, std::vector<char> bytes) {
  FromJs([&] {
    Op op{OpKind::kWrite};
    op.stream = stream;
    op.bytes = std::move(bytes);
    Enqueue(s, std::move(op));
  });
}

void Server::WriteBorrowed(Slot* s, std::vector<iovec> pieces, std::shared_ptr<void> keep) {
  FromJs([&] {
    Op op{OpKind::kWrite};
    op.stream = 1;
    op.pieces = std::move(pieces);
    op.keep = std::move(keep);
    Enqueue(s, std::move(op));
  });
}

void Server::Finish(Slot* s, int exit_status, std::vector<char> bytes) {
  FromJs([&] {
    Op op{OpKind::kFinish};
    op.exit_status = exit_status;
    op.bytes = std::move(bytes);
    if (s->active) s->finishing = true;
    Enqueue(s, std::move(op));
  });
}

void Server::FinishBorrowed(Slot* s, int exit_status, std::vector<iovec> pieces, std::shared_ptr<void> keep) {
  FromJs([&] {
    Op op{OpKind::kFinish};
    op.exit_status = exit_status;
    op.pieces = std::move(pieces);
    op.keep = std::move(keep);
    if (s->active) s->finishing = true;
    Enqueue(s, std::move(op));
  });
}

void Server::Abort(Slot* s) {
  FromJs([&] {
    Op op{OpKind::kFinish};
    op.abort = true;
    if (s->active) s->finishing = true;
    Enqueue(s, std::move(op));
  });
}

void Server::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  if (closed_) return;
  closed_ = true;
  closing_.store(true, std::memory_order_relaxed);
  if (share_) share_->accepting.store(0, std::memory_order_relaxed);
  if (listen_fd_ >= 0) {
    if (epoll_fd_ >= 0) epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, listen_fd_, nullptr);
    close(listen_fd_);
    if (listen_fd_ == 0) {
      // Keep fd 0 taken so a later open() does not become "stdin".
      int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (null_fd > 0) {
        dup2(null_fd, 0);
        close(null_fd);
      }
    }
    listen_fd_ = -1;
  }
  std::vector<Conn*> kept;
  int64_t now = NowMs();
  for (auto& kv : conns_) {
    Conn* c = kv.second;
    if (c->state != Conn::State::kIdle) continue;  // Ready ones get served
    if (c->used && now - c->idle_since_ms >= kHotMs) {
      kept.push_back(c);
    } else {
      c->lingering = true;
      c->deadline_ms = now + (c->used ? kLingerHotMs : kLingerFreshMs);
      lingering_++;
    }
  }
  for (Conn* c : kept) CloseConn(c, false);
  SettleClose();
  Wake();  // the poller watches the lingering connections' deadline
}

void Server::SettleClose() {
  if (!closed_ || !ready_.empty() || lingering_ > 0) return;
  for (Slot* s : waiting_) {
    s->waiting = false;
    auto* c = new Completion();
    c->slot_id = s->id;
    c->kind = EventKind::kAccept;
    c->status = kClosed;
    Post(c);
  }
  waiting_.clear();
}

void Server::Destroy() {
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (stopping_) return;
  }
  Close();
  {
    std::unique_lock<std::mutex> lock(mu_);
    stopping_ = true;
    // Wake any worker blocked in a read or write on a peer.
    for (auto& kv : conns_) {
      if (kv.second->fd >= 0) shutdown(kv.second->fd, SHUT_RDWR);
    }
    work_cv_.notify_all();
  }
  Wake();
  if (poller_.joinable()) poller_.join();
  {
    std::unique_lock<std::mutex> lock(mu_);
    exit_cv_.wait(lock, [this] { return threads_ == 0; });
    ReapFinished();
    for (auto& kv : slots_) {
      Slot* s = kv.second;
      FCGX_Free(&s->req, 0);  // streams and params; the fd is ours to close
      s->conn = nullptr;
      s->ops.clear();
      s->running = s->parked = s->waiting = s->active = false;
      s->server = nullptr;
      if (!s->js_alive) delete s;
    }
    slots_.clear();
    for (auto& kv : conns_) {
      if (kv.second->fd >= 0) close(kv.second->fd);
      delete kv.second;
    }
    conns_.clear();
    PublishConns();
    ready_.clear();
    runnable_.clear();
  }
  if (epoll_fd_ >= 0) close(epoll_fd_);
  if (wake_fd_ >= 0) close(wake_fd_);
  if (share_block_) {
    munmap(share_block_, kShareBlockBytes);
    share_block_ = share_ = nullptr;
  }
  epoll_fd_ = wake_fd_ = -1;
}

Stats Server::GetStats() {
  std::lock_guard<std::mutex> lock(mu_);
  Stats s = stats_;
  s.threads = threads_;
  s.idle_threads = idle_threads_;
  s.connections = static_cast<int>(conns_.size());
  s.pending_connections = static_cast<int>(ready_.size()) + lingering_;
  for (auto& kv : conns_) {
    if (kv.second->state == Conn::State::kIdle) s.idle_connections++;
    if (kv.second->state == Conn::State::kBusy) s.busy_connections++;
  }
  return s;
}

// ------------------------------------------------------------ poller thread

void Server::Wake() {
  if (wake_fd_ < 0) return;
  uint64_t one = 1;
  ssize_t r = write(wake_fd_, &one, sizeof one);
  (void)r;
}

void Server::Post(Completion* c) { post_(c); }

// A socket-level notice for JS (slot 0, kDropped): a dropped request's
// reason, or kMaxConnsReached.
void Server::PostNotice(int status) {
  auto* n = new Completion();
  n->slot_id = 0;
  n->kind = EventKind::kDropped;
  n->status = status;
  Post(n);
}

void Server::Arm(Conn* conn, uint32_t events, bool add) {
  conn->edge = (events & EPOLLET) != 0;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = conn->id;
  epoll_ctl(epoll_fd_, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, conn->fd, &ev);
}

void Server::PollerMain() {
  DeprioritizeWakeups();
  NameThread("fcgi-poller");
  epoll_event events[128];
  bool emfile = false;
  std::vector<Slot*> claimed;
  for (;;) {
    int timeout = -1;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
      if (draining_ > 0 || lingering_ > 0 || emfile) timeout = 100;
      if (options_.idle_timeout_ms > 0 && !conns_.empty()) {
        // Look for connections idle too long about twice per timeout (at
        // most once a second): a close comes at most ~1.5x late.
        int64_t wait = std::max<int64_t>(0, next_idle_scan_ms_ - NowMs());
        if (timeout < 0 || wait < timeout) timeout = static_cast<int>(wait);
      }
      if (options_.read_timeout_ms > 0 && !conns_.empty()) {
        int64_t wait = std::max<int64_t>(0, next_stall_scan_ms_ - NowMs());
        if (timeout < 0 || wait < timeout) timeout = static_cast<int>(wait);
      }
      if (watching_) timeout = kStarvedMs;
      if (defer_until_ms_ > 0) {
        int d = static_cast<int>(std::max<int64_t>(1, defer_until_ms_ - NowMs()));
        timeout = timeout < 0 ? d : std::min(timeout, d);
      }
    }
    int n = epoll_wait(epoll_fd_, events, 128, timeout);
    // The lock is taken per event, not per batch: the JS thread submitting
    // work must not wait behind a whole batch of events and their syscalls.
    for (int i = 0; i < n; i++) {
      uint64_t id = events[i].data.u64;
      if (id == kWakeId) {
        uint64_t v;
        ssize_t r = read(wake_fd_, &v, sizeof v);
        (void)r;
        continue;
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stopping_) return;
        if (id == kListenId) {
          AcceptConnections();
        } else {
          auto it = conns_.find(id);
          if (it != conns_.end()) HandleConnEvent(it->second, events[i].events);
        }
        Dispatch(&claimed);
      }
      if (!claimed.empty()) AcceptClaimed(claimed);
    }
    std::unique_lock<std::mutex> lock(mu_);
    if (stopping_) return;
    // Close drained connections whose linger time is over.
    // ... and unused connections kept after Close() whose request never came.
    if (draining_ > 0 || lingering_ > 0) {
      int64_t now = NowMs();
      std::vector<Conn*> expired;
      for (auto& kv : conns_) {
        if ((kv.second->state == Conn::State::kDraining || kv.second->lingering) && kv.second->deadline_ms <= now)
          expired.push_back(kv.second);
      }
      for (Conn* c : expired) CloseConn(c, false);
    }
    if (options_.idle_timeout_ms > 0) CloseIdleConns();
    ExpireStalled();
    // Listen again once under the connection cap (or after EMFILE), or at
    // the end of a deferral step (shared accept).
    emfile = false;
    if (defer_until_ms_ > 0 && NowMs() >= defer_until_ms_) defer_until_ms_ = 0;
    if (!closed_ && listen_fd_ >= 0 && !listen_armed_ && defer_until_ms_ == 0 &&
        static_cast<int>(conns_.size()) < options_.max_conns) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = kListenId;
      epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, listen_fd_, &ev);
      listen_armed_ = true;
    }
    Dispatch(&claimed);
    if (!listen_armed_ && !closed_ && defer_until_ms_ == 0) emfile = true;
    if (watching_) {
      // Watch for as long as work is queued. An idle (or starting) thread
      // seen now may be about to take that work and block on a slow peer
      // too: stopping the watch then left the rest of the queue waiting,
      // with no new work to restart the watch, until a blocked thread came
      // back (readTimeout for a peer stalled mid-record).
      if (runnable_.empty() || threads_ >= options_.max_threads) {
        watching_ = false;
      } else if (idle_threads_ + starting_threads_ == 0 && NowMs() - last_progress_ms_ >= kStarvedMs) {
        SpawnWorker();  // every thread is stuck (slow peers): one more
        last_progress_ms_ = NowMs();
      }
    }
    if (!claimed.empty()) {
      lock.unlock();
      AcceptClaimed(claimed);
    }
  }
}

// Kept connections with no request for idle_timeout_ms are closed (mu_
// held). Only Idle ones: a Ready connection has a request waiting for a
// slot, and a lingering one has its own deadline.
void Server::CloseIdleConns() {
  int64_t now = NowMs();
  if (now < next_idle_scan_ms_) return;
  next_idle_scan_ms_ = now + std::min<int64_t>(1000, std::max(1, options_.idle_timeout_ms / 2));
  std::vector<Conn*> expired;
  for (auto& kv : conns_) {
    Conn* c = kv.second;
    if (c->state == Conn::State::kIdle && !c->lingering && c->head_since_ms == 0 &&
        now - c->idle_since_ms >= options_.idle_timeout_ms)
      expired.push_back(c);
  }
  for (Conn* c : expired) {
    stats_.idle_timeouts++;
    CloseConn(c, false);
  }
}

void Server::PublishConns() {
  if (share_) share_->conns.store(static_cast<int32_t>(conns_.size()), std::memory_order_relaxed);
}

// Shared accept: should we leave the next connection to a sibling? Yes while
// we hold more connections than some sibling that is accepting, for at most
// kShareMaxDeferMs since we first stepped aside.
bool Server::ShouldDefer(int64_t now) {
  int32_t mine = static_cast<int32_t>(conns_.size());
  int32_t least = INT32_MAX;
  for (int i = 0; i < kShareEntries; i++) {
    const ShareEntry& e = share_block_[i];
    if (&e == share_ || e.accepting.load(std::memory_order_relaxed) == 0) continue;
    least = std::min(least, e.conns.load(std::memory_order_relaxed));
  }
  if (mine <= least) return false;
  if (defer_since_ms_ == 0) defer_since_ms_ = now;
  return now - defer_since_ms_ < kShareMaxDeferMs;
}

void Server::AcceptConnections() {
  // O_NONBLOCK belongs to the open file description, which every process
  // holding the socket shares (`libfcgi serve`'s other workers, spawn-fcgi's
  // children) and which others may change: libuv makes a spawned child's
  // fds 0-2 blocking, Node restores the flags it found at exit. On a blocking
  // socket, an accept4() that a sibling beat to the connection (or the one
  // that ends this loop) would sleep until the next connection, the poller
  // holding every connection it owns. So: set it again whenever it is gone;
  // if it goes between this check and accept4(), SO_RCVTIMEO (Start) bounds
  // the wait to kListenTimeoutMs.
  int fl = fcntl(listen_fd_, F_GETFL);
  if (fl >= 0 && !(fl & O_NONBLOCK)) fcntl(listen_fd_, F_SETFL, fl | O_NONBLOCK);
  int64_t now = share_ ? NowMs() : 0;
  while (listen_fd_ >= 0 && static_cast<int>(conns_.size()) < options_.max_conns) {
    if (share_ && ShouldDefer(now)) {
      // Listen again in a moment (PollerMain); a sibling that is accepting
      // takes the connection meanwhile.
      epoll_event ev{};
      ev.data.u64 = kListenId;
      epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, listen_fd_, &ev);
      listen_armed_ = false;
      defer_until_ms_ = now + kShareDeferStepMs;
      return;
    }
    sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int fd = accept4(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC);
    if (fd >= 0 || errno == EAGAIN || errno == EWOULDBLOCK) defer_since_ms_ = 0;
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // Out of descriptors: stop listening for a moment instead of spinning.
        epoll_event ev{};
        ev.data.u64 = kListenId;
        epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, listen_fd_, &ev);
        listen_armed_ = false;
      }
      break;
    }
    if (!PeerAllowed(ss, options_.allowed)) {
      stats_.refused_connections++;
      close(fd);
      continue;
    }
    if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (options_.read_timeout_ms > 0) {
      timeval tv{options_.read_timeout_ms / 1000, (options_.read_timeout_ms % 1000) * 1000};
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    } else if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
      // A TCP socket inherits the listen socket's SO_RCVTIMEO (kListenTimeoutMs).
      timeval tv{0, 0};
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    stats_.accepted_connections++;
    Conn* c = new Conn();
    c->id = next_conn_id_++;
    c->idle_since_ms = options_.idle_timeout_ms > 0 ? NowMs() : 0;
    c->fd = fd;
    conns_[c->id] = c;
    PublishConns();
    Arm(c, EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, true);
  }
  if (listen_fd_ >= 0 && listen_armed_ &&
      static_cast<int>(conns_.size()) >= options_.max_conns) {
    epoll_event ev{};
    ev.data.u64 = kListenId;
    epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, listen_fd_, &ev);
    listen_armed_ = false;
    // Tell JS (a line for the operator): new connections now wait in the
    // listen backlog. At most once a second: at the cap, every connection
    // that closes lets one more in and the cap is reached again.
    stats_.max_conns_reached++;
    int64_t now = NowMs();
    if (now - max_conns_notice_ms_ >= 1000) {
      max_conns_notice_ms_ = now;
      PostNotice(kMaxConnsReached);
    }
  }
}

void Server::HandleConnEvent(Conn* conn, uint32_t ev) {
  switch (conn->state) {
    case Conn::State::kIdle: {
      if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        char b;
        ssize_t r = recv(conn->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (r <= 0) {  // the web server closed its kept connection
          CloseConn(conn, false);
          return;
        }
      }
      if (closed_ && !conn->lingering) {
        CloseConn(conn, false);
        return;
      }
      if (!HeadReady(conn, ev)) return;
      if (conn->lingering) {
        conn->lingering = false;  // its first request has come: serve it
        lingering_--;
      }
      conn->state = Conn::State::kReady;
      ready_.push_back(conn);
      return;
    }
    case Conn::State::kBusy: {
      Slot* s = conn->slot;
      if (s->parked) {
        if (conn->wait_inq > 1 && !(ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) &&
            QueuedBytes(conn->fd) < conn->wait_inq) {
          WatchForMore(conn);  // in the middle of a record: not enough yet
          return;
        }
        StopWatchingForMore(conn);
        s->parked = false;
        s->ops.push_front(std::move(s->parked_op));
        Schedule(s);
        return;
      }
      bool gone = (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
      if (!gone && (ev & EPOLLIN) && s->input_done && s->active) {
        // After FCGI_STDIN's end the web server sends nothing for this
        // request but FCGI_ABORT_REQUEST (or closes the connection).
        unsigned char h[FCGI_HEADER_LEN];
        ssize_t r = recv(conn->fd, h, sizeof h, MSG_PEEK | MSG_DONTWAIT);
        size_t total = r > 0 ? AbortRecordAt(h, static_cast<size_t>(r), s->req.requestId) : 0;
        if (r == 0) {
          gone = true;
        } else if (total > 0) {
          char sink[512];
          while (total > 0) {
            ssize_t k = recv(conn->fd, sink, std::min(total, sizeof sink), MSG_DONTWAIT);
            if (k <= 0) break;
            total -= static_cast<size_t>(k);
          }
          gone = true;
        } else if (r > 0) {
          // Another record (a management request, a pipelined BEGIN): leave
          // it for the next FCGX_Accept_r, watch only for a hang-up now.
          Arm(conn, EPOLLRDHUP | EPOLLONESHOT);
          return;
        }
      }
      if (gone) {
        PostAbort(s);
        return;  // stays disarmed: nothing more to learn from this peer
      }
      Arm(conn, EPOLLRDHUP | EPOLLONESHOT);
      return;
    }
    case Conn::State::kDraining: {
      char sink[16384];
      for (;;) {
        ssize_t r = recv(conn->fd, sink, sizeof sink, MSG_DONTWAIT);
        if (r > 0) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (r < 0 && errno == EINTR) continue;
        CloseConn(conn, false);
        return;
      }
    }
    case Conn::State::kReady:
      return;
  }
}

// An idle connection the peer wrote to: has its next request's head all
// arrived, so that libfcgi can read it without waiting? Until it has (or
// read_timeout_ms passes, ExpireStalled), the connection stays here in the
// poller, holding no thread and no slot. What libfcgi must see at once
// (a management record to answer, bytes it refuses, a peer that hung up)
// goes on too.
bool Server::HeadReady(Conn* conn, uint32_t ev) {
  bool ready = true;
  if (!(ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) &&
      (conn->wait_inq == 0 || QueuedBytes(conn->fd) >= conn->wait_inq)) {
    ssize_t n = recv(conn->fd, peek_buf_.data(), peek_buf_.size(), MSG_PEEK | MSG_DONTWAIT);
    if (n > 0) {
      HeadScan scan = ScanHead(peek_buf_.data(), static_cast<size_t>(n), params_limits_);
      conn->head_whole = scan.kind == HeadScan::kComplete;
      if (scan.kind == HeadScan::kPartial && static_cast<size_t>(n) < peek_buf_.size()) {
        if (conn->head_since_ms == 0) conn->head_since_ms = NowMs();
        conn->wait_inq = static_cast<size_t>(n) + scan.need;
        ready = false;
      }
    }
  } else if (!(ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
    ready = false;  // still short of wait_inq
  }
  if (!ready) {
    WatchForMore(conn);
    return false;
  }
  conn->head_since_ms = 0;
  StopWatchingForMore(conn);
  return true;
}

// Watched edge-triggered (no EPOLLONESHOT): bytes already queued wake the
// poller once, and then only new bytes do. A re-armed one-shot watch would
// fire again at once for the bytes already there.
void Server::WatchForMore(Conn* conn) {
  if (conn->edge) return;
  Arm(conn, EPOLLIN | EPOLLRDHUP | EPOLLET);
}

// Back to the one-shot scheme: disarmed, as a one-shot watch is after its
// event (a hang-up is still reported once).
void Server::StopWatchingForMore(Conn* conn) {
  conn->wait_inq = 0;
  if (conn->edge) Arm(conn, EPOLLONESHOT);
}

// Peers that left a request head, or a record of a request's input, unfinished
// for read_timeout_ms (mu_ held). A head: the connection is closed and the
// request dropped (reported as libfcgi's own timeouts are). A read: it fails
// with ETIMEDOUT, as a read libfcgi made would, and the request is aborted.
void Server::ExpireStalled() {
  int64_t now = NowMs();
  if (options_.read_timeout_ms <= 0 || now < next_stall_scan_ms_) return;
  next_stall_scan_ms_ = now + std::min<int64_t>(1000, std::max(10, options_.read_timeout_ms / 4));
  std::vector<Conn*> heads;
  for (auto& kv : conns_) {
    Conn* c = kv.second;
    if (c->state == Conn::State::kIdle && c->head_since_ms > 0 &&
        now - c->head_since_ms >= options_.read_timeout_ms) {
      heads.push_back(c);
    } else if (c->state == Conn::State::kBusy && c->slot != nullptr && c->slot->parked &&
               now - c->slot->parked_since_ms >= options_.read_timeout_ms) {
      Slot* s = c->slot;
      stats_.read_timeouts++;
      FCGX_Stream* in = s->req.in;
      if (in->FCGI_errno == 0) in->FCGI_errno = ETIMEDOUT;
      in->isClosed = 1;
      c->wait_inq = 0;
      Arm(c, EPOLLRDHUP | EPOLLONESHOT);  // as a busy connection is watched
      s->parked = false;
      s->ops.push_front(std::move(s->parked_op));
      Schedule(s);
    }
  }
  for (Conn* c : heads) {
    stats_.read_timeouts++;
    stats_.dropped_requests++;
    PostNotice(ETIMEDOUT);
    CloseConn(c, false);
  }
}

void Server::CloseConn(Conn* conn, bool graceful) {
  if (graceful && conn->fd >= 0 && shutdown(conn->fd, SHUT_WR) == 0) {
    conn->state = Conn::State::kDraining;
    draining_++;
    conn->slot = nullptr;
    conn->deadline_ms = NowMs() + options_.linger_ms;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = conn->id;
    epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, conn->fd, &ev);
    Wake();  // the poller recomputes its timeout
    return;
  }
  if (conn->fd >= 0) {
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, conn->fd, nullptr);
    close(conn->fd);
  }
  if (conn->state == Conn::State::kReady) {
    ready_.erase(std::remove(ready_.begin(), ready_.end(), conn), ready_.end());
  }
  if (conn->state == Conn::State::kDraining) draining_--;
  if (conn->lingering) lingering_--;
  conns_.erase(conn->id);
  PublishConns();
  delete conn;
  SettleClose();
}

// -------------------------------------------------------------- the strands

void Server::Dispatch(std::vector<Slot*>* claimed) {
  while (!waiting_.empty() && !ready_.empty()) {
    Slot* s = waiting_.front();
    waiting_.pop_front();
    s->waiting = false;
    Conn* c = ready_.front();
    ready_.pop_front();
    c->state = Conn::State::kBusy;
    c->slot = s;
    s->conn = c;
    if (claimed != nullptr && !s->running) {
      s->running = true;  // the strand is the caller's until AcceptClaimed
      claimed->push_back(s);
    } else {
      Enqueue(s, Op{OpKind::kAccept});
    }
  }
  SettleClose();
}

// On the poller or the JS thread, without the lock: a request whose
// BEGIN_REQUEST and params have all arrived is accepted right here (every read libfcgi makes for it
// is served from the socket at once), saving the hop to a worker; otherwise
// the accept goes to a worker, which may wait for the rest.
void Server::AcceptClaimed(std::vector<Slot*>& claimed) {
  for (Slot* s : claimed) {
    if (s->conn->head_whole || RequestHeadArrived(s->conn->fd, params_limits_)) {
      RunAccept(s);
      std::lock_guard<std::mutex> lock(mu_);
      s->running = false;
      if (!s->ops.empty()) {
        Schedule(s);
      } else {
        MaybeDelete(s);
      }
    } else {
      std::lock_guard<std::mutex> lock(mu_);
      s->running = false;
      Enqueue(s, Op{OpKind::kAccept});
    }
  }
  claimed.clear();
}

void Server::Enqueue(Slot* s, Op op) {
  if (op.kind == OpKind::kRead && s->parked) {
    // One read at a time per request; the JS layer never asks for two.
    auto* c = new Completion();
    c->slot_id = s->id;
    c->kind = EventKind::kRead;
    c->status = EBUSY;
    Post(c);
    return;
  }
  s->ops.push_back(std::move(op));
  Schedule(s);
}

void Server::Schedule(Slot* s) {
  if (s->running || stopping_) return;
  s->running = true;
  runnable_.push_back(s);
  if (idle_threads_ + starting_threads_ < static_cast<int>(runnable_.size())) {
    if (threads_ < core_threads_) {
      SpawnWorker();
      return;
    }
    if (threads_ < options_.max_threads && idle_threads_ == 0 && !watching_) {
      watching_ = true;  // the poller checks for starvation every kStarvedMs
      Wake();
    }
  }
  if (idle_threads_ == 0) return;  // a busy worker takes it when done
  if (defer_notify_) {
    deferred_notifies_++;  // sent by the caller once mu_ is released
  } else {
    work_cv_.notify_one();
  }
}

// The JS thread's entry points: wake workers only after releasing mu_, so a
// woken worker does not go straight back to sleep on the mutex we hold.
template <typename F>
void Server::FromJs(F&& f) {
  int notifies;
  {
    std::lock_guard<std::mutex> lock(mu_);
    defer_notify_ = true;
    f();
    defer_notify_ = false;
    notifies = deferred_notifies_;
    deferred_notifies_ = 0;
  }
  while (notifies-- > 0) work_cv_.notify_one();
}

void Server::SpawnWorker() {
  ReapFinished();
  threads_++;
  starting_threads_++;
  workers_.emplace_back([this] { WorkerMain(); });
}

void Server::MaybeDelete(Slot* s) {
  if (s->js_alive || s->running || s->parked || s->waiting || s->active || s->conn ||
      !s->ops.empty())
    return;
  FCGX_Free(&s->req, 0);
  slots_.erase(s->id);
  delete s;
}

void Server::WorkerMain() {
  DeprioritizeWakeups();
  NameThread("fcgi-worker");
  std::unique_lock<std::mutex> lock(mu_);
  starting_threads_--;
  for (;;) {
    bool timed_out = false;
    while (runnable_.empty() && !stopping_) {
      idle_threads_++;
      timed_out = work_cv_.wait_for(lock, std::chrono::seconds(kIdleThreadSeconds)) ==
                  std::cv_status::timeout;
      idle_threads_--;
      if (timed_out && runnable_.empty() && threads_ > 1) break;
    }
    if (stopping_ || runnable_.empty()) break;
    Slot* s = runnable_.front();
    runnable_.pop_front();
    last_progress_ms_ = NowMs();
    if (s->ops.empty()) {
      s->running = false;
      MaybeDelete(s);
      continue;
    }
    Op op = std::move(s->ops.front());
    s->ops.pop_front();
    Run(s, op, lock);
    // A parked read waits in the poller; other ops (writes) still go on.
    if (!s->ops.empty() && !stopping_) {
      runnable_.push_back(s);
    } else {
      s->running = false;
      MaybeDelete(s);
    }
  }
  threads_--;
  finished_.push_back(std::this_thread::get_id());
  exit_cv_.notify_all();
}

void Server::ReapFinished() {
  // A finished thread only has to return from WorkerMain, which needs no
  // lock: joining it here is brief.
  for (auto id : finished_) {
    for (auto it = workers_.begin(); it != workers_.end(); ++it) {
      if (it->get_id() == id) {
        it->join();
        workers_.erase(it);
        break;
      }
    }
  }
  finished_.clear();
}

void Server::Run(Slot* s, Op& op, std::unique_lock<std::mutex>& lock) {
  switch (op.kind) {
    case OpKind::kAccept:
      lock.unlock();
      RunAccept(s);
      lock.lock();
      return;
    case OpKind::kRead:
      RunRead(s, op, lock);
      return;
    case OpKind::kWrite:
      lock.unlock();
      RunWrite(s, op);
      lock.lock();
      return;
    case OpKind::kFinish:
      lock.unlock();
      RunFinish(s, op);
      lock.lock();
      AfterRequest(s);
      return;
  }
}

void Server::RunAccept(Slot* s) {
  int fd = s->conn->fd;
  s->conn->head_whole = false;
  FCGX_InitRequest(&s->req, -1, 0);
  s->req.ipcFd = fd;
  // Our connection, our rules: libfcgi must never close it lingering on a
  // worker thread (it would with keepConnection == 0), and on a protocol
  // error it closes it at once (detached) and returns instead of accepting
  // on listen_sock -1.
  s->req.keepConnection = 1;
  s->req.detached = 1;
  int rc = FCGX_Accept_r(&s->req);

  bool input_done = false;
  if (rc == 0 && s->req.role != FCGI_FILTER) {
    input_done = ConsumeBufferedEmptyStdin(s->req.in, s->req.requestId);
  }

  auto* c = new Completion();
  c->slot_id = s->id;
  c->kind = EventKind::kAccept;
  if (rc == 0) {
    c->role = s->req.role;
    c->request_id = s->req.requestId;
    c->keep_conn = s->req.keepConnection != 0;
    size_t total = 0;
    for (char** p = s->req.envp; p && *p; p++) total += strlen(*p) + 1;
    c->params.reserve(total);
    for (char** p = s->req.envp; p && *p; p++) {
      if (p != s->req.envp) c->params.push_back('\0');
      c->params.append(*p);
    }
  }

  std::lock_guard<std::mutex> relock(mu_);
  Conn* conn = s->conn;
  if (rc == 0) {
    s->keep_conn = s->req.keepConnection != 0;
    s->req.keepConnection = 1;
    s->active = true;
    conn->used = true;
    s->aborted = s->finishing = s->data_started = s->err_written = false;
    // With the input read to its end, only FCGI_ABORT_REQUEST or a hang-up
    // can come for this request: watch for both (see RunRead).
    s->input_done = input_done;
    stats_.requests++;
    if (!stopping_) Arm(conn, input_done ? EPOLLIN | EPOLLRDHUP | EPOLLONESHOT : EPOLLRDHUP | EPOLLONESHOT);
    Post(c);
    if (!s->js_alive) {
      // Nobody will answer it: end the request at once.
      s->finishing = true;
      Enqueue(s, Op{OpKind::kFinish});
    }
    return;
  }
  // The peer closed or sent garbage: libfcgi has closed the descriptor. Tell
  // JS why (a log line for the operator), unless the peer just went away.
  if (int why = FCGX_AcceptError(&s->req); why != 0 && why != FCGX_REQUEST_ABORTED) {
    stats_.dropped_requests++;
    PostNotice(why);
  }
  delete c;
  conn->fd = -1;
  s->conn = nullptr;
  CloseConn(conn, false);
  if (stopping_) {
    auto* closed = new Completion();
    closed->slot_id = s->id;
    closed->kind = EventKind::kAccept;
    closed->status = kClosed;
    Post(closed);
  } else if (s->js_alive) {
    s->waiting = true;
    waiting_.push_front(s);
    SettleClose();  // closed, and nothing left to serve: kClosed
  }
}

void Server::PostAbort(Slot* s) {
  if (!s->active || s->finishing || s->aborted) return;
  s->aborted = true;
  auto* c = new Completion();
  c->slot_id = s->id;
  c->kind = EventKind::kAbort;
  Post(c);
}

void Server::RunRead(Slot* s, Op& op, std::unique_lock<std::mutex>& lock) {
  auto* c = new Completion();
  c->slot_id = s->id;
  c->kind = EventKind::kRead;
  if (!s->active || s->finishing) {
    c->eof = true;
    c->status = s->active ? 0 : ECANCELED;
    Post(c);
    return;
  }
  int fd = s->conn->fd;
  FCGX_Stream* in = s->req.in;
  lock.unlock();

  bool parked = false;
  // Reads wait in the poller, holding no thread, until libfcgi can go on
  // without waiting for the peer: until the socket holds `wait` bytes.
  size_t wait = 0;
  if (op.stream == 1 && !s->data_started) {
    // FCGI_DATA follows FCGI_STDIN: skip whatever stdin the app left.
    char sink[4096];
    while (FCGX_HasSeenEOF(in) != EOF) {
      int avail = Avail(in);
      if (avail > 0) {
        FCGX_GetStr(sink, std::min<int>(avail, sizeof sink), in);
      } else if ((wait = InputWait(in, fd, FCGI_STDIN, s->req.requestId)) == 0) {
        FCGX_GetStr(sink, 1, in);
      } else {
        parked = true;
        break;
      }
    }
    if (!parked && FCGX_GetError(in) == 0 && FCGX_StartFilterData(in) == 0) {
      s->data_started = true;
    }
  }
  size_t total = 0;
  int alloc_error = 0;
  if (!parked && FCGX_GetError(in) == 0) {
    // malloc, not a vector: no zero-filling, and pages a short read does not
    // reach are never touched (a large block is mmap'd). Shrunk to what was
    // read, then owned by a JS Buffer (addon.cc PushCompletion).
    char* buf = static_cast<char*>(malloc(op.max));
    if (buf == nullptr) alloc_error = ENOMEM;
    while (buf != nullptr && total < op.max) {
      int avail = Avail(in);
      if (avail > 0) {
        int want = static_cast<int>(std::min<size_t>(op.max - total, static_cast<size_t>(avail)));
        total += static_cast<size_t>(FCGX_GetStr(buf + total, want, in));
        continue;
      }
      if (FCGX_HasSeenEOF(in) == EOF) break;
      if ((wait = InputWait(in, fd, op.stream == 1 ? FCGI_DATA : FCGI_STDIN, s->req.requestId)) != 0) {
        parked = total == 0;
        break;
      }
      int n = FCGX_GetStr(buf + total, 1, in);  // one buffer fill
      if (n <= 0) break;
      total += static_cast<size_t>(n);
    }
    if (total == 0) {
      free(buf);
    } else {
      if (total < op.max) {
        if (char* shrunk = static_cast<char*>(realloc(buf, total))) buf = shrunk;
      }
      c->read_buf.reset(buf);
      c->read_len = total;
    }
  }
  bool eof = FCGX_HasSeenEOF(in) == EOF;
  int error = FCGX_GetError(in);

  lock.lock();
  if (parked && !stopping_) {
    // Wait for input in the poller: a slow body holds no thread.
    delete c;
    s->parked_op = std::move(op);
    s->parked = true;
    s->parked_since_ms = NowMs();
    s->conn->wait_inq = wait;
    Arm(s->conn, EPOLLIN | EPOLLRDHUP | EPOLLONESHOT);
    return;
  }
  if (alloc_error != 0) {
    c->status = alloc_error;
  } else if (total == 0 && error != 0) {
    c->status = error;
    if (error == ETIMEDOUT) {
      // readTimeout (ExpireStalled): the read's own error first, so that
      // the app sees why (ETIMEDOUT), then the abort.
      Post(c);
      PostAbort(s);
      return;
    }
    PostAbort(s);  // a peer that closes or aborts mid-body
  } else if (eof && error == 0) {
    c->eof = true;
    bool last = op.stream == 1 || s->req.role != FCGI_FILTER;
    if (last && !s->input_done) {
      // After the last input stream only FCGI_ABORT_REQUEST or a hang-up can
      // come for this request: watch for both.
      s->input_done = true;
      if (!s->parked) Arm(s->conn, EPOLLIN | EPOLLRDHUP | EPOLLONESHOT);
    }
  }
  Post(c);
}

// Large stdout writes bypass libfcgi's stream buffer: instead of being copied
// into it and written one buffer at a time, the caller's bytes go to the
// socket as FCGI_STDOUT records (at most 65528 content bytes each, padded to
// 8 as libfcgi pads) in one sendmsg() per IOV_MAX pieces. Whatever libfcgi
// still buffers is flushed first, so the records stay in order. Returns 0 or
// an errno; on an error the stream is marked failed as libfcgi marks it, so
// FCGX_Finish_r closes the connection (a record may have been cut).
static int SendStdoutRecords(FCGX_Request* req, const std::vector<iovec>& pieces) {
  FCGX_Stream* out = req->out;
  FCGX_FFlush(out);
  if (int err = FCGX_GetError(out)) return err;
  size_t total = 0;
  for (const iovec& p : pieces) total += p.iov_len;
  if (total == 0) return 0;
  constexpr size_t kMaxContent = 65528;  // a multiple of 8 under 65535
  static const unsigned char kZeros[8] = {};
  size_t records = (total + kMaxContent - 1) / kMaxContent;
  std::vector<FCGI_Header> headers(records);
  std::vector<iovec> iov;
  iov.reserve(pieces.size() + 2 * records + 1);
  size_t pi = 0, off = 0;
  for (size_t r = 0; r < records; r++) {
    size_t content = std::min(kMaxContent, total - r * kMaxContent);
    size_t padding = (8 - content % 8) % 8;
    FCGI_Header& h = headers[r];
    PutHeader(reinterpret_cast<unsigned char*>(&h), FCGI_STDOUT, req->requestId, content,
              static_cast<int>(padding));
    iov.push_back({&h, sizeof h});
    while (content > 0) {
      const iovec& p = pieces[pi];
      size_t take = std::min(content, p.iov_len - off);
      if (take > 0) iov.push_back({static_cast<char*>(p.iov_base) + off, take});
      content -= take;
      off += take;
      if (off == p.iov_len) {
        pi++;
        off = 0;
      }
    }
    if (padding > 0) iov.push_back({const_cast<unsigned char*>(kZeros), padding});
  }
  size_t i = 0;
  while (i < iov.size()) {
    msghdr m{};
    m.msg_iov = &iov[i];
    m.msg_iovlen = std::min<size_t>(iov.size() - i, IOV_MAX);
    ssize_t n = sendmsg(req->ipcFd, &m, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      if (out->FCGI_errno == 0) out->FCGI_errno = err;  // libfcgi's SetError
      out->isClosed = 1;
      return err;
    }
    auto left = static_cast<size_t>(n);
    while (left > 0 && left >= iov[i].iov_len) left -= iov[i++].iov_len;
    if (left > 0) {
      iov[i].iov_base = static_cast<char*>(iov[i].iov_base) + left;
      iov[i].iov_len -= left;
    }
  }
  return 0;
}

void Server::RunWrite(Slot* s, Op& op) {
  auto* c = new Completion();
  c->slot_id = s->id;
  c->kind = EventKind::kWrite;
  FCGX_Stream* st = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (s->active) st = op.stream == 2 ? s->req.err : s->req.out;
  }
  if (st == nullptr) {
    c->status = ECANCELED;
  } else if (!op.pieces.empty()) {
    c->status = SendStdoutRecords(&s->req, op.pieces);
  } else {
    int len = static_cast<int>(op.bytes.size());
    if (len > 0 && op.stream == 2) s->err_written = true;
    if (len > 0 && FCGX_PutStr(op.bytes.data(), len, st) == len) FCGX_FFlush(st);
    c->status = FCGX_GetError(st);
  }
  // Borrowed memory is given back before the completion can reach JS.
  op.pieces.clear();
  op.keep.reset();
  Post(c);
}

void Server::RunFinish(Slot* s, Op& op) {
  bool active, input_done, aborted;
  int fd = -1;
  {
    std::lock_guard<std::mutex> lock(mu_);
    active = s->active;
    input_done = s->input_done;
    aborted = s->aborted;
    if (s->conn) fd = s->conn->fd;
  }
  if (!active) return;
  if (op.raw) {
    // The rest of the end records FinishNow could not send at once.
    FCGX_Free(&s->req, 0);
    int err = WriteAll(fd, op.bytes.data(), op.bytes.size());
    if (err == 0) ShutdownIfClosing(fd);
    std::lock_guard<std::mutex> lock(mu_);
    if (err != 0) s->write_failed = true;
    return;
  }
  if (op.abort) {
    // Free libfcgi's streams without writing anything; the connection is
    // closed under the lock in AfterRequest.
    FCGX_Free(&s->req, 0);
    std::lock_guard<std::mutex> lock(mu_);
    s->cut = true;
    return;
  }
  FCGX_Stream* in = s->req.in;
  if (!input_done && s->keep_conn && !aborted && s->req.role != FCGI_FILTER) {
    // The app did not read all of FCGI_STDIN (a GET handler never does, and
    // its stdin is one empty record, usually buffered already). Discard what
    // has arrived, up to a bound, so the connection can serve the next
    // request; if more is still to come, the connection is closed instead.
    char sink[8192];
    size_t budget = 1 << 20;
    while (FCGX_HasSeenEOF(in) != EOF && budget > 0) {
      // What is buffered, else one buffer fill, and only when that cannot
      // wait for the peer (a GetStr for more than is there would).
      int avail = Avail(in), n;
      if (avail > 0) {
        n = FCGX_GetStr(sink, static_cast<int>(std::min({budget, sizeof sink, static_cast<size_t>(avail)})), in);
      } else if (InputWait(in, fd, FCGI_STDIN, s->req.requestId) == 0) {
        n = FCGX_GetStr(sink, 1, in);
      } else {
        break;
      }
      if (n <= 0) break;
      budget -= static_cast<size_t>(n);
    }
    input_done = FCGX_HasSeenEOF(in) == EOF && FCGX_GetError(in) == 0;
  }
  // Bytes past the end of the input were pipelined by the peer; libfcgi
  // frees them with the request, so this connection cannot be reused.
  bool pipelined = input_done && FCGX_InputBuffered(in) > 0;
  if (!op.pieces.empty()) {
    // A large last write, read in place: records straight from the JS
    // memory, then given back (before the completion can reach JS).
    SendStdoutRecords(&s->req, op.pieces);
    op.pieces.clear();
    op.keep.reset();
  } else if (!op.bytes.empty()) {
    // Buffered by libfcgi and sent with the end records: a small response
    // leaves in one write().
    FCGX_PutStr(op.bytes.data(), static_cast<int>(op.bytes.size()), s->req.out);
  }
  s->req.appStatus = op.exit_status;
  s->req.keepConnection = 1;  // we decide in AfterRequest
  FCGX_Finish_r(&s->req);     // flush, FCGI_END_REQUEST; closes fd on error
  if (s->req.ipcFd >= 0) ShutdownIfClosing(fd);
  std::lock_guard<std::mutex> lock(mu_);
  s->input_done = input_done && !pipelined;
}

// After Close(), a request's connection is closed once its end records are
// sent (EndRequest). Its FIN goes right behind them, before anything else:
// the web server then sees the end of the connection together with the
// response and does not put it back in its pool (nginx checks for that when
// it releases the connection); sent later, the FIN can meet the next request
// the web server already wrote on it ("upstream prematurely closed").
void Server::ShutdownIfClosing(int fd) {
  if (fd >= 0 && closing_.load(std::memory_order_relaxed)) shutdown(fd, SHUT_WR);
}

void Server::AfterRequest(Slot* s) {
  auto* c = new Completion();
  c->slot_id = s->id;
  c->kind = EventKind::kFinish;
  c->status = EndRequest(s);
  if (s->parked) {
    // A read still waiting for input ends with the request.
    s->parked = false;
    s->parked_op = Op();
    auto* r = new Completion();
    r->slot_id = s->id;
    r->kind = EventKind::kRead;
    r->status = ECANCELED;
    Post(r);
  }
  Post(c);
}

int Server::EndRequest(Slot* s) {
  if (!s->active) return 0;
  int status = 0;
  Conn* conn = s->conn;
  s->conn = nullptr;
  s->active = false;
  s->finishing = false;
  if (s->cut) {
    s->cut = false;
    CloseConn(conn, false);  // no FCGI_END_REQUEST: the response is cut short
  } else if (s->req.ipcFd < 0) {
    conn->fd = -1;  // libfcgi closed it after a write error
    status = EPIPE;
    CloseConn(conn, false);
  } else if (s->write_failed) {
    status = EPIPE;
    CloseConn(conn, false);
  } else if (!s->keep_conn || closed_ || stopping_ || !s->input_done || s->aborted) {
    CloseConn(conn, true);
  } else {
    conn->state = Conn::State::kIdle;
    conn->slot = nullptr;
    conn->idle_since_ms = NowMs();
    Arm(conn, EPOLLIN | EPOLLRDHUP | EPOLLONESHOT);
  }
  s->req.ipcFd = -1;
  s->write_failed = false;
  return status;
}

// ----------------------------------------------------- the fast finish (JS)

Server::FinishResult Server::FinishNow(Slot* s, int exit_status, const iovec* body, int body_count,
                                       size_t body_len, int* status) {
  // One FCGI_STDOUT record at most: bigger responses take the worker path.
  constexpr size_t kMaxBody = 65535;
  constexpr int kMaxPieces = 64;
  if (body_len > kMaxBody || body_count > kMaxPieces) return FinishResult::kNotNow;
  int fd;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!s->active || s->finishing || s->aborted || s->running || s->parked || !s->ops.empty() ||
        !s->input_done || s->conn == nullptr || stopping_ || FCGX_InputBuffered(s->req.in) > 0)
      return FinishResult::kNotNow;
    // Claim the strand: no worker runs an op of this slot until released.
    s->running = true;
    s->finishing = true;
    fd = s->conn->fd;
  }
  const int id = s->req.requestId;
  const int padding = static_cast<int>((8 - body_len % 8) % 8);
  // [STDOUT header][body...][padding][STDOUT end][STDERR end?][END_REQUEST]
  unsigned char head[FCGI_HEADER_LEN];
  unsigned char tail[8 + 3 * FCGI_HEADER_LEN + 8] = {};
  size_t tail_len = static_cast<size_t>(padding);
  PutHeader(tail + tail_len, FCGI_STDOUT, id, 0, 0);
  tail_len += FCGI_HEADER_LEN;
  if (s->err_written) {
    PutHeader(tail + tail_len, FCGI_STDERR, id, 0, 0);
    tail_len += FCGI_HEADER_LEN;
  }
  PutHeader(tail + tail_len, FCGI_END_REQUEST, id, 8, 0);
  tail_len += FCGI_HEADER_LEN;
  unsigned char* end = tail + tail_len;  // FCGI_EndRequestBody
  const uint32_t app = static_cast<uint32_t>(exit_status);
  end[0] = (app >> 24) & 0xff;
  end[1] = (app >> 16) & 0xff;
  end[2] = (app >> 8) & 0xff;
  end[3] = app & 0xff;
  end[4] = FCGI_REQUEST_COMPLETE;
  tail_len += 8;

  iovec iov[kMaxPieces + 2];
  int n = 0;
  if (body_len > 0) {
    PutHeader(head, FCGI_STDOUT, id, body_len, padding);
    iov[n++] = {head, sizeof head};
    for (int i = 0; i < body_count; i++) {
      if (body[i].iov_len > 0) iov[n++] = body[i];
    }
    iov[n++] = {tail, tail_len};
  } else {
    iov[n++] = {tail + padding, tail_len - static_cast<size_t>(padding)};
  }
  size_t total = 0;
  for (int i = 0; i < n; i++) total += iov[i].iov_len;

  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = static_cast<size_t>(n);
  ssize_t sent;
  do {
    sent = sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  int err = sent < 0 ? errno : 0;

  if (sent < 0 && (err == EAGAIN || err == EWOULDBLOCK)) {
    // The peer's socket buffer is full: nothing left, the worker path does it.
    std::lock_guard<std::mutex> lock(mu_);
    s->running = false;
    s->finishing = false;
    return FinishResult::kNotNow;
  }
  if (sent >= 0 && static_cast<size_t>(sent) == total) ShutdownIfClosing(fd);
  // Sent (all, part, or failed): libfcgi's streams are done with.
  FCGX_Free(&s->req, 0);
  std::unique_lock<std::mutex> lock(mu_);
  s->running = false;
  if (sent >= 0 && static_cast<size_t>(sent) < total) {
    // Part went out: a worker writes the rest, then ends the request.
    Op op{OpKind::kFinish};
    op.raw = true;
    op.bytes.reserve(total - static_cast<size_t>(sent));
    size_t skip = static_cast<size_t>(sent);
    for (int i = 0; i < n; i++) {
      const char* p = static_cast<const char*>(iov[i].iov_base);
      size_t len = iov[i].iov_len;
      if (skip >= len) {
        skip -= len;
        continue;
      }
      op.bytes.insert(op.bytes.end(), p + skip, p + len);
      skip = 0;
    }
    defer_notify_ = true;
    Enqueue(s, std::move(op));
    defer_notify_ = false;
    int notifies = deferred_notifies_;
    deferred_notifies_ = 0;
    lock.unlock();
    while (notifies-- > 0) work_cv_.notify_one();
    return FinishResult::kQueued;
  }
  if (sent < 0) {
    s->write_failed = true;
  } else {
    stats_.inline_finishes++;
  }
  *status = EndRequest(s);
  return FinishResult::kDone;
}

}  // namespace fcgi
