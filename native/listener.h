// Listening sockets made by our own code (never FCGX_OpenSocket, which calls
// exit() on failure and only speaks IPv4). Plain C++, no Node types: each
// function returns a file descriptor or fills a SysError.
#pragma once

#include <netinet/in.h>
#include <string>
#include <vector>

namespace fcgi {

struct SysError {
  int errno_ = 0;
  const char* syscall_ = "";
};

// host: literal IPv4/IPv6 address or "" for all interfaces (dual stack).
int ListenTcp(const std::string& host, int port, int backlog, SysError* err);

// Refuses to replace a socket another process still listens on (EADDRINUSE),
// replaces a stale one, never unlinks anything that is not a socket.
// mode < 0 keeps the umask's permissions; uid/gid < 0 keep ours (else the
// socket file is chown'd, like mode before listen(): root only, usually).
int ListenUnix(const std::string& path, int backlog, int mode, int uid, int gid, SysError* err);

// A user or group name -> its id (getpwnam_r/getgrnam_r, so NSS sources
// count too); -1 with errno 0 when there is no such name.
long LookupUser(const std::string& name, int* err);
long LookupGroup(const std::string& name, int* err);

// Local address of a listening socket: {family, address, port | path}.
struct SockName {
  int family = 0;  // AF_INET, AF_INET6, AF_UNIX, or 0 when unknown
  std::string address;
  int port = 0;
};
SockName LocalName(int fd);

// True when fd is a listening stream socket (what a web server hands a
// FastCGI app as fd 0, FCGI_LISTENSOCK_FILENO).
bool IsListeningSocket(int fd);

// Peer allow-list (FCGI_WEB_SERVER_ADDRS): 16-byte IPv6 form, IPv4 mapped.
using AddrList = std::vector<in6_addr>;
bool PeerAllowed(const sockaddr_storage& peer, const AddrList& allowed);

}  // namespace fcgi
