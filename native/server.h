// The FastCGI server core: one listening socket, one poller thread that owns
// every connection that is not in use, and a small pool of our own worker
// threads that run the blocking libfcgi calls. No Node type appears here;
// results leave through Server::Post() as plain `Completion` structs (the
// only thing that crosses from our threads to the JS thread, see addon.cc).
//
// Connection states (guarded by mu_):
//   Idle     -> kept open between requests, in epoll for EPOLLIN (one-shot),
//               holding no thread
//   Ready    -> has input, waiting for a Slot that called accept()
//   Busy     -> owned by a Slot for one request; in epoll for EPOLLRDHUP so
//               a web server that drops the request is noticed at once
//   Draining -> our side shut down, input read and discarded until EOF or
//               a deadline, then closed (avoids a RST that loses the reply)
//
// A Slot is libfcgi's FCGX_Request plus a strand: its operations run one at
// a time, in order, on the worker pool. A read with no input waiting parks
// in the poller instead of holding a thread. Two short cuts keep a small
// request off the pool entirely: whoever pairs a waiting slot with a ready
// connection (the poller, or the JS thread asking for the next request) runs
// the accept itself when the whole request head is already in the socket
// (nothing can block), and the JS thread sends a small response with its end
// records in one non-blocking sendmsg when nothing else of the request is in
// flight (FinishNow). The pool starts max(4, 2 x cores) threads as needed and adds more (up to max_threads) only when all of
// them are stuck, e.g. writing to peers that do not read.
#pragma once

#include <fcgiapp.h>
#include <netinet/in.h>
#include <sys/uio.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "listener.h"
#include "wire.h"

namespace fcgi {

enum class EventKind : uint8_t {
  kAccept = 1,  // a request arrived (or status kClosed: the socket closed)
  kRead = 2,    // stdin/data bytes (eof set at the end)
  kWrite = 3,   // stdout/stderr bytes were handed to the kernel
  kFinish = 4,  // FCGX_Finish_r done: end-request sent
  kAbort = 5,   // the web server aborted or dropped the request
  kDropped = 6, // a connection dropped at accept (slot 0; status: FCGX_AcceptError),
                // or kMaxConnsReached
};

// Status codes in Completion::status besides 0 (ok), errno (> 0) and
// libfcgi's FCGX_* codes (< 0):
constexpr int kClosed = -1000;  // accept: the server socket was closed
constexpr int kMaxConnsReached = -1001;  // kDropped: at max_conns, accepting paused

// ---- The thread boundary: built on a worker/poller, consumed on JS thread.
struct Completion {
  uint32_t slot_id = 0;
  EventKind kind = EventKind::kAccept;
  int status = 0;
  bool eof = false;
  // read: the bytes (malloc'd, read_len of them), handed over to a JS Buffer
  // without a copy on the JS thread.
  mutable std::unique_ptr<char, void (*)(void*)> read_buf{nullptr, free};
  size_t read_len = 0;
  int role = 0;
  int request_id = 0;
  bool keep_conn = false;
  std::string params;              // accept: "NAME=value\0NAME=value..." (one allocation)
};

struct Options {
  int max_conns = 1024;          // open connections (idle + busy)
  int max_reqs = 1024;           // answered in FCGI_GET_VALUES
  int max_threads = 64;          // worker threads at most
  int core_threads = 0;          // started eagerly; 0: max(4, 2 x cores)
  int params_max_bytes = 1 << 20;
  int params_max_count = 1000;
  int linger_ms = 2000;          // Draining deadline
  int read_timeout_ms = 60000;   // a peer stalled mid-record (SO_RCVTIMEO)
  int idle_timeout_ms = 0;       // a kept connection without a request: closed after (0: never)
  // libfcgi's per-request stream buffers (our patch 0008): each read(2) of
  // FCGI_PARAMS/FCGI_STDIN and each write(2) of FCGI_STDOUT moves at most
  // this much. Allocated at accept, freed at finish; pages a small request
  // never touches are never made resident.
  int in_buffer_size = 64 * 1024;
  int out_buffer_size = 64 * 1024;
  AddrList allowed;              // FCGI_WEB_SERVER_ADDRS, empty: anyone
  // Processes sharing one listen socket (`libfcgi serve --workers N`): the
  // fd of a ShareBlock (ShareCreate) and this process's entry in it. The
  // server maps the block and closes share_fd. -1: not shared.
  int share_fd = -1;
  int share_index = -1;
};

// The even share between processes that accept on the same listen socket.
// Every one of them is woken for each new connection and the first to run
// used to take whole bursts (nginx opens its keepalive connections in a
// burst). Each process publishes how many connections it holds; one that
// holds more than a sibling defers its accept for a moment so the sibling
// takes the connection, never longer than kShareMaxDeferMs (a sibling that
// is stuck, or killed before its entry was cleared, must never leave a
// connection waiting).
struct alignas(64) ShareEntry {
  std::atomic<int32_t> conns{0};      // connections held
  std::atomic<int32_t> accepting{0};  // 1 while listening (not closed)
};
constexpr int kShareEntries = 64;
constexpr size_t kShareBlockBytes = sizeof(ShareEntry) * kShareEntries;
// A memfd of kShareBlockBytes, zeroed (close-on-exec: hand it to a child
// through spawn's stdio). -1 and errno on failure.
int ShareCreate();
// Zeroes entry `index` (its process is gone) without mapping the block.
bool ShareClear(int fd, int index);

struct Stats {
  int threads = 0, idle_threads = 0;
  int connections = 0, idle_connections = 0, busy_connections = 0;
  int pending_connections = 0;  // a request waiting for a slot, or (closed) not used yet
  uint64_t accepted_connections = 0, refused_connections = 0, requests = 0;
  uint64_t inline_finishes = 0;  // ended by FinishNow on the JS thread (all sent at once)
  uint64_t idle_timeouts = 0;    // kept connections closed after idle_timeout_ms
  uint64_t dropped_requests = 0; // unreadable (malformed, over the params limits, stalled)
  uint64_t max_conns_reached = 0;  // times the connection cap stopped accepting
  uint64_t read_timeouts = 0;    // heads and input reads the peer left unfinished for read_timeout_ms
};

class Server;

enum class OpKind : uint8_t { kAccept, kRead, kWrite, kFinish };

struct Op {
  explicit Op(OpKind k = OpKind::kRead) : kind(k) {}
  OpKind kind;
  int stream = 0;             // read: 0 stdin, 1 data; write: 1 stdout, 2 stderr
  size_t max = 0;             // read: at most this many bytes
  std::vector<char> bytes;    // write (copied bytes)
  // write, finish: stdout bytes read in place (large writes; see WriteBorrowed).
  // `keep` holds the memory until the op is destroyed or reset.
  std::vector<iovec> pieces;
  std::shared_ptr<void> keep;
  int exit_status = 0;        // finish
  bool abort = false;         // finish: close without FCGI_END_REQUEST
  bool raw = false;           // finish: `bytes` are the rest of the end records
                              // (FinishNow sent the first part), written as is
};

struct Conn;

struct Slot {
  uint32_t id = 0;
  Server* server = nullptr;    // nullptr once the server is destroyed
  FCGX_Request req;
  Conn* conn = nullptr;
  std::deque<Op> ops;
  bool running = false;        // queued on or running on the pool
  bool parked = false;         // parked_op waits for input in the poller
  Op parked_op;
  int64_t parked_since_ms = 0;  // read_timeout_ms counts from here
  bool waiting = false;        // accept() pending, in Server::waiting_
  bool active = false;         // a request is accepted and not finished
  bool finishing = false;
  bool cut = false;            // ended by Abort(): close, no end records
  bool aborted = false;
  bool input_done = false;     // the last input stream was read to its end
  bool data_started = false;
  bool err_written = false;
  bool write_failed = false;   // FinishNow's end records could not be sent    // FCGI_STDERR carried bytes: it needs an end record
  bool keep_conn = false;
  bool js_alive = true;        // the JS Request still references us
};

struct Conn {
  uint64_t id = 0;
  int fd = -1;
  enum class State : uint8_t { kIdle, kReady, kBusy, kDraining } state = State::kIdle;
  Slot* slot = nullptr;
  int64_t deadline_ms = 0;     // Draining; lingering: until when it may stay
  bool used = false;           // a request was accepted on it
  int64_t idle_since_ms = 0;   // Idle after a request: since when
  bool lingering = false;      // kept after Close() for one more request (never
                               // used: its first; used: see kHotMs)
  // Idle: when the first bytes of an unfinished request head came (0: none;
  // read_timeout_ms counts from here).
  int64_t head_since_ms = 0;
  // Idle with part of a head, or Busy with a read parked in the middle of a
  // record: the poller goes on only once the socket holds this many bytes
  // (FIONREAD); until then it is watched edge-triggered (`edge`), so that
  // the bytes already there do not wake the poller again and again.
  size_t wait_inq = 0;
  bool edge = false;
  // The poller saw the whole head (ScanHead kComplete): AcceptClaimed need
  // not look again. Cleared by RunAccept.
  bool head_whole = false;
};

class Server {
 public:
  using PostFn = std::function<void(Completion*)>;

  // Takes ownership of listen_fd.
  Server(int listen_fd, Options options, PostFn post);
  ~Server();

  bool Start(SysError* err);

  Slot* NewSlot();
  // Called from the JS thread when its Request is collected.
  void ReleaseSlot(Slot* slot);

  void Accept(Slot* slot);
  void Read(Slot* slot, int stream, size_t max);
  void Write(Slot* slot, int stream, std::vector<char> bytes);
  // A write of bytes the caller keeps valid until `keep` is released, which
  // happens on a worker before the kWrite completion is posted. stdout only:
  // they leave as FCGI_STDOUT records straight from `pieces`, without going
  // through libfcgi's buffer.
  void WriteBorrowed(Slot* slot, std::vector<iovec> pieces, std::shared_ptr<void> keep);
  // bytes: stdout written just before FCGI_END_REQUEST, in the same write().
  void Finish(Slot* slot, int exit_status, std::vector<char> bytes = {});
  // Finish whose last stdout bytes are read in place (as WriteBorrowed).
  void FinishBorrowed(Slot* slot, int exit_status, std::vector<iovec> pieces, std::shared_ptr<void> keep);
  // The JS thread's fast finish: when the strand is idle, the input was read
  // to its end and the response fits one record, the end records are built
  // here and sent without blocking (MSG_DONTWAIT), so the request ends with
  // no thread hop. kNotNow: nothing was done (call Finish()); kQueued: part
  // was sent, a worker sends the rest and posts kFinish as usual; kDone: the
  // request is over, *status as a kFinish completion would carry it.
  enum class FinishResult { kNotNow, kQueued, kDone };
  FinishResult FinishNow(Slot* slot, int exit_status, const struct iovec* body, int body_count,
                         size_t body_len, int* status);
  // Ends the request without FCGI_END_REQUEST: the connection is closed, so
  // the web server sees the response cut short (node:http's socket reset).
  void Abort(Slot* slot);

  // Stop accepting connections, gracefully: connections the web server has
  // used and keeps idle are closed (a web server retries a request that
  // fails on a kept connection), at once if they have been idle for a while,
  // else after one more request or a second (fewer of those retries, see
  // kHotMs); requests in flight go on, and so do requests that already
  // arrived or arrive within a few seconds on a connection accepted but not
  // used yet (a web server does not retry those: closing them would fail
  // the request). Pending accepts are served from those, and complete with
  // kClosed once none is left.
  void Close();
  // Stop everything now and join the threads (no JS is called).
  void Destroy();

  Stats GetStats();
  int listen_fd() const { return listen_fd_; }
  // Whatever the embedder (addon.cc) wants to find from a Slot's server.
  void set_owner(void* owner) { owner_ = owner; }
  void* owner() const { return owner_; }

 private:
  void PollerMain();
  void WorkerMain();
  void AcceptConnections();                       // mu_ held
  void CloseIdleConns();                          // mu_ held
  void ExpireStalled();                           // mu_ held
  // Idle: has the request head arrived (then it goes to ready_)?
  bool HeadReady(Conn* conn, uint32_t ev);        // mu_ held
  // Wait for conn->wait_inq bytes (edge-triggered), or stop waiting.
  void WatchForMore(Conn* conn);                  // mu_ held
  void StopWatchingForMore(Conn* conn);           // mu_ held
  bool ShouldDefer(int64_t now);                  // mu_ held
  void PublishConns();                            // mu_ held
  void HandleConnEvent(Conn* conn, uint32_t ev);  // mu_ held
  // Pairs waiting slots with ready connections (mu_ held). With `claimed`
  // (the poller, and Accept() on the JS thread), the pairs are claimed and
  // returned: the caller runs their accept itself when the request's head
  // has arrived (AcceptClaimed).
  void Dispatch(std::vector<Slot*>* claimed = nullptr);
  void AcceptClaimed(std::vector<Slot*>& claimed);  // mu_ not held
  void Schedule(Slot* slot);                      // mu_ held
  template <typename F>
  void FromJs(F&& f);                             // runs f under mu_
  void AcceptLocked(Slot* slot, std::vector<Slot*>* claimed = nullptr);  // mu_ held
  void Enqueue(Slot* slot, Op op);                // mu_ held
  void Run(Slot* slot, Op& op, std::unique_lock<std::mutex>& lock);
  void RunAccept(Slot* slot);
  void RunRead(Slot* slot, Op& op, std::unique_lock<std::mutex>& lock);
  void PostAbort(Slot* slot);                     // mu_ held
  void RunWrite(Slot* slot, Op& op);
  void RunFinish(Slot* slot, Op& op);
  void AfterRequest(Slot* slot);                  // mu_ held
  void ShutdownIfClosing(int fd);                 // mu_ not needed
  int EndRequest(Slot* slot);                     // mu_ held; the kFinish status
  void CloseConn(Conn* conn, bool graceful);      // mu_ held
  void SettleClose();                             // mu_ held
  void Arm(Conn* conn, uint32_t events, bool add = false);
  void MaybeDelete(Slot* slot);                   // mu_ held
  void Wake();
  void ReapFinished();                             // mu_ held
  void SpawnWorker();                              // mu_ held
  void Post(Completion* c);
  void PostNotice(int status);  // slot 0, kDropped

  int listen_fd_;
  void* owner_ = nullptr;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  Options options_;
  PostFn post_;

  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable exit_cv_;
  std::thread poller_;
  // Worker threads are joined, never detached: at a Worker's teardown the
  // addon is unloaded right after Destroy(), so no thread may still run.
  std::vector<std::thread> workers_;
  std::vector<std::thread::id> finished_;  // exited on idleness, to join
  int threads_ = 0;
  int idle_threads_ = 0;
  int starting_threads_ = 0;  // spawned, not yet looking for work
  // Past core_threads, a thread is added only when queued work has made no
  // progress for kStarvedMs (threads blocked writing to slow peers): more
  // runnable threads than cores only steal CPU from the JS thread.
  int core_threads_ = 4;
  bool watching_ = false;
  bool defer_notify_ = false;   // inside FromJs: notify after unlocking
  int deferred_notifies_ = 0;
  int64_t last_progress_ms_ = 0;
  int64_t next_idle_scan_ms_ = 0;  // idle_timeout_ms: when the poller looks next
  int64_t next_stall_scan_ms_ = 0;  // read_timeout_ms: when the poller looks next
  std::vector<unsigned char> peek_buf_;  // the poller's (HeadReady)
  ParamsLimits params_limits_{};  // as libfcgi applies them (ScanHead)
  int64_t max_conns_notice_ms_ = 0;  // the last kMaxConnsReached notice
  bool stopping_ = false;
  bool closed_ = false;
  std::atomic<bool> closing_{false};  // closed_, readable without mu_
  bool listen_armed_ = false;
  // Shared accept (Options::share_*): our entry, and a deferral in progress
  // (the listen socket disarmed until defer_until_ms_, deferring since
  // defer_since_ms_; 0: none).
  ShareEntry* share_block_ = nullptr;
  ShareEntry* share_ = nullptr;
  int64_t defer_since_ms_ = 0;
  int64_t defer_until_ms_ = 0;
  int draining_ = 0;  // connections in State::kDraining
  int lingering_ = 0;  // connections with Conn::lingering

  uint32_t next_slot_id_ = 1;
  uint64_t next_conn_id_ = 16;  // ids below are reserved (listen, wake)
  std::unordered_map<uint64_t, Conn*> conns_;
  std::unordered_map<uint32_t, Slot*> slots_;
  std::deque<Slot*> waiting_;   // accept() pending
  std::deque<Conn*> ready_;     // input arrived, no slot yet
  std::deque<Slot*> runnable_;  // strands with an op to run
  Stats stats_;
};

// libfcgi's process-wide initialisation, once, without its signal handlers.
int InitLibfcgiOnce();

}  // namespace fcgi
