// Node-API glue: a flat function table (described for TypeScript in
// src/native.ts). The only place where our threads meet JS is CallJs below:
// a fcgi::Completion built on a worker or the poller arrives here through the
// server's one TypedThreadSafeFunction and becomes JS values.
#include <napi.h>

#include <arpa/inet.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <deque>
#include <memory>
#include <mutex>

#include "listener.h"
#include "server.h"

namespace fcgi {
namespace {

struct ServerBox;
void CallJs(Napi::Env env, Napi::Function fn, ServerBox* box, Completion* c);
using Tsfn = Napi::TypedThreadSafeFunction<ServerBox, Completion, CallJs>;

// Completions wait in our own queue; the TSFN carries only a wake-up when the
// queue stops being empty, and JS drains it in bounded batches (drain()),
// yielding to timers between batches. (Node runs up to 1000 TSFN items in one
// loop turn: a 1 ms timer would be late by tens of ms under load.)
struct ServerBox {
  std::unique_ptr<Server> server;
  std::mutex queue_mu;
  std::deque<Completion*> queue;
  bool signaled = false;
  Tsfn tsfn;
  bool tsfn_live = false;
  bool destroyed = false;
  Napi::Env::CleanupHook<void (*)(ServerBox*), ServerBox> hook;
  bool hook_set = false;
  // JS values whose memory a borrowed write (WriteJs) read in place: their
  // references are deleted on the JS thread, in the next drain(). Guarded by
  // queue_mu; a write gives its reference back before its completion is
  // queued, so the drain that delivers the completion releases it.
  std::vector<napi_ref> unpinned;

  void Destroy(Napi::Env env, bool from_hook) {
    if (destroyed) return;
    destroyed = true;
    if (server) server->Destroy();  // joins our threads; no JS runs here
    if (tsfn_live) {
      tsfn_live = false;
      // Normally the completions already queued (accepts answered "closed")
      // are still delivered; at environment teardown they are dropped
      // (CallJs frees them).
      if (from_hook) {
        tsfn.Abort();
      } else {
        tsfn.Release();
      }
    }
    if (hook_set && !from_hook) hook.Remove(env);
    hook_set = false;
    std::lock_guard<std::mutex> lock(queue_mu);
    for (Completion* c : queue) delete c;
    queue.clear();
    // The server's threads are joined and its ops gone: every borrowed
    // write has given its reference back. At teardown the environment frees
    // them itself.
    if (!from_hook) ReleasePins(env, unpinned);
    unpinned.clear();
  }

  static void ReleasePins(napi_env env, const std::vector<napi_ref>& refs) {
    for (napi_ref r : refs) napi_delete_reference(env, r);
  }

  // Any thread: the op that borrowed `ref`'s memory is done with it.
  void Unpin(napi_ref ref) {
    std::lock_guard<std::mutex> lock(queue_mu);
    unpinned.push_back(ref);
  }

  // Any thread.
  void Post(Completion* c) {
    bool wake = false;
    {
      std::lock_guard<std::mutex> lock(queue_mu);
      queue.push_back(c);
      if (!signaled) signaled = wake = true;
    }
    if (wake) tsfn.NonBlockingCall(nullptr);
  }
};

void CleanupHook(ServerBox* box) {
  // Process exit or worker.terminate(): stop threads, call no JS.
  box->hook_set = false;
  box->Destroy(Napi::Env(nullptr), true);
}

Napi::Value ErrnoResult(Napi::Env env, const SysError& err) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("errno", Napi::Number::New(env, err.errno_));
  o.Set("syscall", Napi::String::New(env, err.syscall_));
  return o;
}

Napi::Value FdResult(Napi::Env env, int fd) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("fd", Napi::Number::New(env, fd));
  return o;
}

void CallJs(Napi::Env env, Napi::Function fn, ServerBox*, Completion*) {
  if (env == nullptr || fn.IsEmpty()) return;  // torn down
  fn.Call({});  // "completions are waiting": JS calls drain()
}

// One completion as six values: slotId, kind, status, payload, n1, n2.
void PushCompletion(Napi::Env env, Napi::Array out, uint32_t& i, const Completion& c) {
  Napi::Value payload = env.Undefined();
  double n1 = 0, n2 = 0;
  switch (c.kind) {
    case EventKind::kAccept:
      if (c.status == 0) {
        // All params as one latin1 string "NAME=value\0NAME=value..." (bytes
        // kept as they are, like node:http's raw headers); the JS side makes
        // the object only when the app looks at it.
        napi_value str;
        napi_create_string_latin1(env, c.params.data(), c.params.size(), &str);
        payload = Napi::Value(env, str);
        n1 = c.role;
        n2 = c.request_id + (c.keep_conn ? 65536 : 0);
      }
      break;
    case EventKind::kRead:
      // The worker's malloc'd block becomes the Buffer's memory (freed by
      // its finalizer): a 1 MiB body is not copied once more on the JS
      // thread. Where external buffers are not allowed, NewOrCopy copies.
      if (c.read_buf) {
        char* bytes = c.read_buf.release();
        payload = Napi::Buffer<char>::NewOrCopy(env, bytes, c.read_len, [](Napi::Env, char* p) { free(p); });
      }
      n1 = c.eof ? 1 : 0;
      break;
    default:
      break;
  }
  out.Set(i++, Napi::Number::New(env, c.slot_id));
  out.Set(i++, Napi::Number::New(env, static_cast<int>(c.kind)));
  out.Set(i++, Napi::Number::New(env, c.status));
  out.Set(i++, payload);
  out.Set(i++, Napi::Number::New(env, n1));
  out.Set(i++, Napi::Number::New(env, n2));
}

ServerBox* GetServer(const Napi::CallbackInfo& info) {
  if (!info[0].IsExternal()) {
    Napi::TypeError::New(info.Env(), "server handle expected").ThrowAsJavaScriptException();
    return nullptr;
  }
  ServerBox* box = info[0].As<Napi::External<ServerBox>>().Data();
  if (box->destroyed || !box->server) {
    Napi::Error e = Napi::Error::New(info.Env(), "the FastCGI socket is closed");
    e.Set("code", Napi::String::New(info.Env(), "ERR_FASTCGI_SOCKET_CLOSED"));
    e.ThrowAsJavaScriptException();
    return nullptr;
  }
  return box;
}

Slot* GetSlot(const Napi::CallbackInfo& info) {
  if (!info[0].IsExternal()) {
    Napi::TypeError::New(info.Env(), "request handle expected").ThrowAsJavaScriptException();
    return nullptr;
  }
  Slot* s = info[0].As<Napi::External<Slot>>().Data();
  if (s->server == nullptr) {
    Napi::Error e = Napi::Error::New(info.Env(), "the FastCGI socket is closed");
    e.Set("code", Napi::String::New(info.Env(), "ERR_FASTCGI_SOCKET_CLOSED"));
    e.ThrowAsJavaScriptException();
    return nullptr;
  }
  return s;
}

// listenTcp(host: string, port: number, backlog: number) -> {fd} | {errno, syscall}
Napi::Value ListenTcpJs(const Napi::CallbackInfo& info) {
  SysError err;
  int fd = ListenTcp(info[0].As<Napi::String>().Utf8Value(), info[1].As<Napi::Number>().Int32Value(),
                     info[2].As<Napi::Number>().Int32Value(), &err);
  return fd < 0 ? ErrnoResult(info.Env(), err) : FdResult(info.Env(), fd);
}

// listenUnix(path: string, backlog: number, mode: number) -> {fd} | {errno, syscall}
Napi::Value ListenUnixJs(const Napi::CallbackInfo& info) {
  SysError err;
  int fd = ListenUnix(info[0].As<Napi::String>().Utf8Value(), info[1].As<Napi::Number>().Int32Value(),
                      info[2].As<Napi::Number>().Int32Value(), info[3].As<Napi::Number>().Int32Value(),
                      info[4].As<Napi::Number>().Int32Value(), &err);
  return fd < 0 ? ErrnoResult(info.Env(), err) : FdResult(info.Env(), fd);
}

// lookupId('user' | 'group', name) -> id | -1 (no such name) | {errno, syscall}
Napi::Value LookupIdJs(const Napi::CallbackInfo& info) {
  bool user = info[0].As<Napi::String>().Utf8Value() == "user";
  std::string name = info[1].As<Napi::String>().Utf8Value();
  int e = 0;
  long id = user ? LookupUser(name, &e) : LookupGroup(name, &e);
  if (id < 0 && e != 0 && e != ENOENT && e != ESRCH && e != EBADF && e != EPERM) {
    SysError err;
    err.errno_ = e;
    err.syscall_ = user ? "getpwnam_r" : "getgrnam_r";
    return ErrnoResult(info.Env(), err);
  }
  return Napi::Number::New(info.Env(), static_cast<double>(id));
}

Napi::Value LocalNameJs(const Napi::CallbackInfo& info) {
  SockName n = LocalName(info[0].As<Napi::Number>().Int32Value());
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("family", Napi::Number::New(info.Env(), n.family == AF_INET ? 4 : n.family == AF_INET6 ? 6 : n.family == AF_UNIX ? 1 : 0));
  o.Set("address", Napi::String::New(info.Env(), n.address));
  o.Set("port", Napi::Number::New(info.Env(), n.port));
  return o;
}

Napi::Value IsListeningJs(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), IsListeningSocket(info[0].As<Napi::Number>().Int32Value()));
}

Napi::Value CloseFdJs(const Napi::CallbackInfo& info) {
  close(info[0].As<Napi::Number>().Int32Value());
  return info.Env().Undefined();
}

// shareCreate() -> {fd} | {errno, syscall}: the block `libfcgi serve`'s
// workers publish their connection counts in (see ShareEntry).
Napi::Value ShareCreateJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ShareCreate();
  Napi::Object e = Napi::Object::New(env);
  if (fd >= 0) {
    e.Set("fd", fd);
    return e;
  }
  e.Set("errno", errno);
  e.Set("syscall", "memfd_create");
  return e;
}

// shareClear(fd, index) -> boolean: a worker is gone, its entry is zeroed.
Napi::Value ShareClearJs(const Napi::CallbackInfo& info) {
  bool ok = ShareClear(info[0].As<Napi::Number>().Int32Value(), info[1].As<Napi::Number>().Int32Value());
  return Napi::Boolean::New(info.Env(), ok);
}

int OptInt(Napi::Object o, const char* key, int dflt) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().Int32Value() : dflt;
}

// serverCreate(fd, options, onEvent) -> External<ServerBox> | {errno, syscall}
Napi::Value ServerCreateJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  Napi::Object o = info[1].As<Napi::Object>();
  Options opt;
  opt.max_conns = OptInt(o, "maxConns", opt.max_conns);
  opt.max_reqs = OptInt(o, "maxReqs", opt.max_reqs);
  opt.max_threads = OptInt(o, "maxThreads", opt.max_threads);
  opt.core_threads = OptInt(o, "coreThreads", opt.core_threads);
  opt.params_max_bytes = OptInt(o, "paramsMaxBytes", opt.params_max_bytes);
  opt.params_max_count = OptInt(o, "paramsMaxCount", opt.params_max_count);
  opt.linger_ms = OptInt(o, "lingerMs", opt.linger_ms);
  opt.read_timeout_ms = OptInt(o, "readTimeoutMs", opt.read_timeout_ms);
  opt.idle_timeout_ms = OptInt(o, "idleTimeoutMs", opt.idle_timeout_ms);
  opt.share_fd = OptInt(o, "shareFd", opt.share_fd);
  opt.share_index = OptInt(o, "shareIndex", opt.share_index);
  Napi::Value allowed = o.Get("allowed");
  if (allowed.IsArray()) {
    Napi::Array a = allowed.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++) {
      Napi::Value b = a.Get(i);
      if (!b.IsBuffer() || b.As<Napi::Buffer<uint8_t>>().Length() != 16) continue;
      in6_addr addr;
      memcpy(&addr, b.As<Napi::Buffer<uint8_t>>().Data(), 16);
      opt.allowed.push_back(addr);
    }
  }

  auto* box = new ServerBox();
  box->tsfn = Tsfn::New(env, info[2].As<Napi::Function>(), "libfcgi", 0, 1, box);
  box->tsfn_live = true;
  box->server = std::make_unique<Server>(fd, std::move(opt), [box](Completion* c) { box->Post(c); });
  box->server->set_owner(box);
  SysError err;
  if (!box->server->Start(&err)) {
    box->server->Destroy();
    box->tsfn.Abort();
    box->tsfn_live = false;
    box->destroyed = true;
    delete box;
    return ErrnoResult(env, err);
  }
  // Registered after the TSFN's own hook, so it runs first at teardown.
  box->hook = env.AddCleanupHook(CleanupHook, box);
  box->hook_set = true;
  return Napi::External<ServerBox>::New(env, box, [](Napi::Env env, ServerBox* b) {
    b->Destroy(env, false);
    delete b;
  });
}

// drain(server, max) -> [slotId, kind, status, payload, n1, n2, ...]; the
// array's `more` property is true when completions are left for a next call.
Napi::Value DrainJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsExternal()) return env.Undefined();
  ServerBox* box = info[0].As<Napi::External<ServerBox>>().Data();
  size_t max = info[1].As<Napi::Number>().Uint32Value();
  std::vector<Completion*> batch;
  std::vector<napi_ref> unpinned;
  bool more;
  {
    std::lock_guard<std::mutex> lock(box->queue_mu);
    unpinned.swap(box->unpinned);
    while (!box->queue.empty() && batch.size() < max) {
      batch.push_back(box->queue.front());
      box->queue.pop_front();
    }
    more = !box->queue.empty();
    if (!more) box->signaled = false;  // the next Post wakes JS again
  }
  ServerBox::ReleasePins(env, unpinned);
  Napi::Array out = Napi::Array::New(env, batch.size() * 6);
  uint32_t i = 0;
  for (Completion* c : batch) {
    PushCompletion(env, out, i, *c);
    delete c;
  }
  out.Set("more", Napi::Boolean::New(env, more));
  return out;
}

Napi::Value ServerCloseJs(const Napi::CallbackInfo& info) {
  if (ServerBox* box = GetServer(info)) box->server->Close();
  return info.Env().Undefined();
}

Napi::Value ServerDestroyJs(const Napi::CallbackInfo& info) {
  if (!info[0].IsExternal()) return info.Env().Undefined();
  ServerBox* box = info[0].As<Napi::External<ServerBox>>().Data();
  box->Destroy(info.Env(), false);
  return info.Env().Undefined();
}

Napi::Value ServerRefJs(const Napi::CallbackInfo& info) {
  if (ServerBox* box = GetServer(info)) {
    if (info[1].ToBoolean().Value()) {
      box->tsfn.Ref(info.Env());
    } else {
      box->tsfn.Unref(info.Env());
    }
  }
  return info.Env().Undefined();
}

Napi::Value ServerStatsJs(const Napi::CallbackInfo& info) {
  ServerBox* box = GetServer(info);
  if (!box) return info.Env().Undefined();
  Stats s = box->server->GetStats();
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("threads", s.threads);
  o.Set("idleThreads", s.idle_threads);
  o.Set("connections", s.connections);
  o.Set("idleConnections", s.idle_connections);
  o.Set("busyConnections", s.busy_connections);
  o.Set("pendingConnections", s.pending_connections);
  o.Set("acceptedConnections", static_cast<double>(s.accepted_connections));
  o.Set("refusedConnections", static_cast<double>(s.refused_connections));
  o.Set("requests", static_cast<double>(s.requests));
  o.Set("inlineFinishes", static_cast<double>(s.inline_finishes));
  o.Set("idleTimeouts", static_cast<double>(s.idle_timeouts));
  o.Set("readTimeouts", static_cast<double>(s.read_timeouts));
  o.Set("droppedRequests", static_cast<double>(s.dropped_requests));
  o.Set("maxConnsReached", static_cast<double>(s.max_conns_reached));
  return o;
}

// slotCreate(server) -> [External<Slot>, id]
Napi::Value SlotCreateJs(const Napi::CallbackInfo& info) {
  ServerBox* box = GetServer(info);
  if (!box) return info.Env().Undefined();
  Slot* s = box->server->NewSlot();
  Napi::Array out = Napi::Array::New(info.Env(), 2);
  out.Set(0u, Napi::External<Slot>::New(info.Env(), s, [](Napi::Env, Slot* slot) {
    if (slot->server) {
      slot->server->ReleaseSlot(slot);  // frees it once its ops are done
    } else {
      delete slot;
    }
  }));
  out.Set(1u, Napi::Number::New(info.Env(), s->id));
  return out;
}

Napi::Value AcceptJs(const Napi::CallbackInfo& info) {
  if (Slot* s = GetSlot(info)) s->server->Accept(s);
  return info.Env().Undefined();
}

Napi::Value ReadJs(const Napi::CallbackInfo& info) {
  if (Slot* s = GetSlot(info)) {
    // At least 1 byte, at most 16 MiB per read (one allocation).
    int64_t max = info[2].As<Napi::Number>().Int64Value();
    max = std::min<int64_t>(std::max<int64_t>(max, 1), 16 << 20);
    s->server->Read(s, info[1].As<Napi::Number>().Int32Value(), static_cast<size_t>(max));
  }
  return info.Env().Undefined();
}

// The memory of a chunk (Buffer | Buffer[]; empty Buffers and anything
// else skipped), walked once per write or finish; returns the total length.
size_t Pieces(Napi::Value chunk, std::vector<iovec>* pieces) {
  size_t total = 0;
  auto add = [&](Napi::Value v) {
    if (!v.IsBuffer()) return;
    auto b = v.As<Napi::Buffer<char>>();
    if (b.Length() == 0) return;
    pieces->push_back({b.Data(), b.Length()});
    total += b.Length();
  };
  if (chunk.IsArray()) {
    Napi::Array a = chunk.As<Napi::Array>();
    pieces->reserve(a.Length());
    for (uint32_t i = 0; i < a.Length(); i++) add(a.Get(i));
  } else {
    add(chunk);
  }
  return total;
}

// The pieces' bytes, copied (no JS memory crosses threads).
std::vector<char> Concat(const std::vector<iovec>& pieces, size_t total) {
  std::vector<char> bytes;
  bytes.reserve(total);
  for (const iovec& p : pieces) {
    const char* d = static_cast<const char*>(p.iov_base);
    bytes.insert(bytes.end(), d, d + p.iov_len);
  }
  return bytes;
}

// A stdout write of at least this many bytes is not copied: see WriteJs.
constexpr size_t kBorrowMin = 16 * 1024;

// Keeps `chunk` (whose pieces an op reads in place) alive until the returned
// holder is released, which gives it back to the JS thread. Empty when no
// reference could be made (the caller copies instead).
std::shared_ptr<void> Pin(Napi::Env env, ServerBox* box, Napi::Value chunk) {
  napi_ref ref;
  if (napi_create_reference(env, chunk, 1, &ref) != napi_ok) return nullptr;
  return std::shared_ptr<void>(ref, [box](void* r) { box->Unpin(static_cast<napi_ref>(r)); });
}

// write(slot, stream, chunk: Buffer | Buffer[])
//
// Small writes are copied. A large stdout write is read in place by the
// worker, as node's own fs.write() and socket writes read a Buffer while the
// operation runs: copying a 1 MiB body twice (here, then into libfcgi's
// buffer) cost more than the rest of the write. Only raw bytes cross the
// thread boundary: a reference to `chunk` (a Buffer or an array of them that
// nobody else holds) keeps the memory alive, and it is given back to the JS
// thread (ServerBox::Unpin, deleted in the next drain()) when the op is done.
// An application that changes a Buffer before write()'s callback changes what
// is sent, as with net.Socket.
Napi::Value WriteJs(const Napi::CallbackInfo& info) {
  Slot* s = GetSlot(info);
  if (!s) return info.Env().Undefined();
  int stream = info[1].As<Napi::Number>().Int32Value();
  Napi::Value chunk = info[2];
  std::vector<iovec> pieces;
  size_t total = Pieces(chunk, &pieces);
  if (stream == 1 && total >= kBorrowMin) {
    if (auto keep = Pin(info.Env(), static_cast<ServerBox*>(s->server->owner()), chunk)) {
      s->server->WriteBorrowed(s, std::move(pieces), std::move(keep));
      return info.Env().Undefined();
    }
  }
  s->server->Write(s, stream, Concat(pieces, total));
  return info.Env().Undefined();
}

// abort(slot): end the request by closing the connection (no end records)
Napi::Value AbortJs(const Napi::CallbackInfo& info) {
  if (Slot* s = GetSlot(info)) s->server->Abort(s);
  return info.Env().Undefined();
}

// finish(slot, exitStatus, stdout?: Buffer | Buffer[], now?: boolean) -> status | undefined
// With `now` (the JS side has no operation of this request outstanding), a
// small response is sent from here, without a thread hop: the result is then
// the status a kFinish completion would carry, and no completion follows.
// undefined: the kFinish completion comes later, as for any operation.
Napi::Value FinishJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Slot* s = GetSlot(info);
  if (!s) return env.Undefined();
  int exit_status = info[1].As<Napi::Number>().Int32Value();
  std::vector<iovec> pieces;
  size_t total = Pieces(info[2], &pieces);
  if (info[3].ToBoolean().Value()) {
    // The JS buffers are read in place: FinishNow copies whatever it cannot
    // send before returning.
    int status = 0;
    switch (s->server->FinishNow(s, exit_status, pieces.data(), static_cast<int>(pieces.size()), total, &status)) {
      case Server::FinishResult::kDone:
        return Napi::Number::New(env, status);
      case Server::FinishResult::kQueued:
        return env.Undefined();
      case Server::FinishResult::kNotNow:
        break;
    }
  }
  // A large last write (a 1 MiB res.end(body)) is read in place, as
  // write() reads it; a small one is copied into libfcgi's buffer and leaves
  // with the end records.
  if (total >= kBorrowMin) {
    if (auto keep = Pin(env, static_cast<ServerBox*>(s->server->owner()), info[2])) {
      s->server->FinishBorrowed(s, exit_status, std::move(pieces), std::move(keep));
      return env.Undefined();
    }
  }
  s->server->Finish(s, exit_status, Concat(pieces, total));
  return env.Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("listenTcp", Napi::Function::New(env, ListenTcpJs));
  exports.Set("listenUnix", Napi::Function::New(env, ListenUnixJs));
  exports.Set("lookupId", Napi::Function::New(env, LookupIdJs));
  exports.Set("localName", Napi::Function::New(env, LocalNameJs));
  exports.Set("isListening", Napi::Function::New(env, IsListeningJs));
  exports.Set("closeFd", Napi::Function::New(env, CloseFdJs));
  exports.Set("shareCreate", Napi::Function::New(env, ShareCreateJs));
  exports.Set("shareClear", Napi::Function::New(env, ShareClearJs));
  exports.Set("shareEntries", Napi::Number::New(env, kShareEntries));
  exports.Set("serverCreate", Napi::Function::New(env, ServerCreateJs));
  exports.Set("serverClose", Napi::Function::New(env, ServerCloseJs));
  exports.Set("drain", Napi::Function::New(env, DrainJs));
  exports.Set("serverDestroy", Napi::Function::New(env, ServerDestroyJs));
  exports.Set("serverRef", Napi::Function::New(env, ServerRefJs));
  exports.Set("serverStats", Napi::Function::New(env, ServerStatsJs));
  exports.Set("slotCreate", Napi::Function::New(env, SlotCreateJs));
  exports.Set("accept", Napi::Function::New(env, AcceptJs));
  exports.Set("read", Napi::Function::New(env, ReadJs));
  exports.Set("write", Napi::Function::New(env, WriteJs));
  exports.Set("finish", Napi::Function::New(env, FinishJs));
  exports.Set("abort", Napi::Function::New(env, AbortJs));
  return exports;
}

}  // namespace
}  // namespace fcgi

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  return fcgi::Init(env, exports);
}

NODE_API_MODULE(libfcgi, InitModule)
