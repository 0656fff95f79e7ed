#include "listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <vector>

namespace fcgi {

namespace {

int Fail(SysError* err, const char* syscall, int fd = -1) {
  err->errno_ = errno;
  err->syscall_ = syscall;
  if (fd >= 0) close(fd);
  return -1;
}

}  // namespace

int ListenTcp(const std::string& host, int port, int backlog, SysError* err) {
  sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  socklen_t len;
  int family;
  if (host.empty() || host.find(':') != std::string::npos) {
    auto* sa6 = reinterpret_cast<sockaddr_in6*>(&ss);
    sa6->sin6_family = AF_INET6;
    sa6->sin6_port = htons(static_cast<uint16_t>(port));
    if (host.empty()) {
      sa6->sin6_addr = in6addr_any;
    } else if (inet_pton(AF_INET6, host.c_str(), &sa6->sin6_addr) != 1) {
      errno = EINVAL;
      return Fail(err, "inet_pton");
    }
    len = sizeof *sa6;
    family = AF_INET6;
  } else {
    auto* sa4 = reinterpret_cast<sockaddr_in*>(&ss);
    sa4->sin_family = AF_INET;
    sa4->sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, host.c_str(), &sa4->sin_addr) != 1) {
      errno = EINVAL;
      return Fail(err, "inet_pton");
    }
    len = sizeof *sa4;
    family = AF_INET;
  }
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 && host.empty() && errno == EAFNOSUPPORT) {
    // No IPv6 on this host: fall back to IPv4 any.
    return ListenTcp("0.0.0.0", port, backlog, err);
  }
  if (fd < 0) return Fail(err, "socket");
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (family == AF_INET6) {
    int v6only = host.empty() ? 0 : 1;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) < 0) return Fail(err, "bind", fd);
  if (listen(fd, backlog) < 0) return Fail(err, "listen", fd);
  return fd;
}

int ListenUnix(const std::string& path, int backlog, int mode, int uid, int gid, SysError* err) {
  sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof sa.sun_path) {
    errno = ENAMETOOLONG;
    return Fail(err, "bind");
  }
  memcpy(sa.sun_path, path.data(), path.size());

  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      errno = EADDRINUSE;  // a regular file or directory: never removed
      return Fail(err, "bind");
    }
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0) return Fail(err, "socket");
    int rc = connect(probe, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    int saved = errno;
    close(probe);
    if (rc == 0 || saved == EAGAIN) {
      errno = EADDRINUSE;  // somebody still listens there
      return Fail(err, "bind");
    }
    if (saved == ECONNREFUSED) {
      if (unlink(path.c_str()) < 0 && errno != ENOENT) return Fail(err, "unlink");
    }
  }

  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Fail(err, "socket");
  if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) return Fail(err, "bind", fd);
  // Owner and permissions are fixed before listen(), so no client can
  // connect before.
  if ((uid >= 0 || gid >= 0) &&
      chown(path.c_str(), uid >= 0 ? static_cast<uid_t>(uid) : static_cast<uid_t>(-1),
            gid >= 0 ? static_cast<gid_t>(gid) : static_cast<gid_t>(-1)) < 0) {
    int saved = errno;
    unlink(path.c_str());
    errno = saved;
    return Fail(err, "chown", fd);
  }
  if (mode >= 0 && chmod(path.c_str(), static_cast<mode_t>(mode)) < 0) {
    int saved = errno;
    unlink(path.c_str());
    errno = saved;
    return Fail(err, "chmod", fd);
  }
  if (listen(fd, backlog) < 0) {
    int saved = errno;
    unlink(path.c_str());
    errno = saved;
    return Fail(err, "listen", fd);
  }
  return fd;
}

long LookupUser(const std::string& name, int* err) {
  std::vector<char> buf(16384);
  passwd pw;
  passwd* found = nullptr;
  *err = getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found);
  return found ? static_cast<long>(found->pw_uid) : -1;
}

long LookupGroup(const std::string& name, int* err) {
  std::vector<char> buf(16384);
  group gr;
  group* found = nullptr;
  *err = getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &found);
  return found ? static_cast<long>(found->gr_gid) : -1;
}

SockName LocalName(int fd) {
  SockName out;
  sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) return out;
  char buf[INET6_ADDRSTRLEN] = {0};
  out.family = ss.ss_family;
  if (ss.ss_family == AF_INET) {
    auto* sa = reinterpret_cast<sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &sa->sin_addr, buf, sizeof buf);
    out.address = buf;
    out.port = ntohs(sa->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    auto* sa = reinterpret_cast<sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &sa->sin6_addr, buf, sizeof buf);
    out.address = buf;
    out.port = ntohs(sa->sin6_port);
  } else if (ss.ss_family == AF_UNIX) {
    auto* sa = reinterpret_cast<sockaddr_un*>(&ss);
    size_t max = len > offsetof(sockaddr_un, sun_path) ? len - offsetof(sockaddr_un, sun_path) : 0;
    out.address.assign(sa->sun_path, strnlen(sa->sun_path, max));
  }
  return out;
}

bool IsListeningSocket(int fd) {
  int accepting = 0;
  socklen_t len = sizeof accepting;
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) < 0) return false;
  return accepting != 0;
}

bool PeerAllowed(const sockaddr_storage& peer, const AddrList& allowed) {
  if (allowed.empty()) return true;
  in6_addr addr;
  if (peer.ss_family == AF_INET) {
    const auto* sa = reinterpret_cast<const sockaddr_in*>(&peer);
    memset(&addr, 0, sizeof addr);
    addr.s6_addr[10] = 0xff;
    addr.s6_addr[11] = 0xff;
    memcpy(&addr.s6_addr[12], &sa->sin_addr, 4);
  } else if (peer.ss_family == AF_INET6) {
    addr = reinterpret_cast<const sockaddr_in6*>(&peer)->sin6_addr;
  } else {
    return true;  // unix sockets are guarded by file permissions
  }
  for (const auto& a : allowed) {
    if (memcmp(&a, &addr, sizeof addr) == 0) return true;
  }
  return false;
}

}  // namespace fcgi
