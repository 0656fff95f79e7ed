/*
 * fcgi_config.h -- hand-written build configuration for compiling
 * libfcgi (fcgiapp.c, os_unix.c) statically into the libfcgi Node.js addon.
 *
 * Upstream generates this header with autoconf.  The addon builds with
 * node-gyp instead, so the answers autoconf would give on the supported
 * targets (Linux with glibc or musl, macOS, the BSDs) are fixed here.
 * Put this directory on the include path; libfcgi's own include/ directory
 * only ships fcgi_config.h.in and the Win32 variant.
 */

#ifndef LIBFCGI_NODE_FCGI_CONFIG_H
#define LIBFCGI_NODE_FCGI_CONFIG_H

#if defined(_WIN32)
#error "libfcgi addon: this fcgi_config.h covers POSIX systems only"
#endif

/* Headers present on every supported POSIX target. */
#define HAVE_ARPA_INET_H 1
#define HAVE_INTTYPES_H 1
#define HAVE_LIMITS_H 1
#define HAVE_MEMORY_H 1
#define HAVE_NETDB_H 1
#define HAVE_NETINET_IN_H 1
#define HAVE_STDINT_H 1
#define HAVE_STDLIB_H 1
#define HAVE_STRINGS_H 1
#define HAVE_STRING_H 1
#define HAVE_SYS_PARAM_H 1
#define HAVE_SYS_SOCKET_H 1
#define HAVE_SYS_STAT_H 1
#define HAVE_SYS_TIME_H 1
#define HAVE_SYS_TYPES_H 1
#define HAVE_UNISTD_H 1
#define STDC_HEADERS 1

/* Library features. */
#define HAVE_SOCKLEN 1          /* socklen_t is declared in <sys/socket.h> */
#define HAVE_FPOS 1             /* fpos_t is declared in <stdio.h> */
#define HAVE_FILENO_PROTO 1     /* fileno() is declared in <stdio.h> */
#define HAVE_STRERROR 1
#define HAVE_PTHREAD 1

/*
 * BSD-derived systems (including macOS) have a sun_len member in
 * struct sockaddr_un; Linux does not.
 */
#if defined(__APPLE__) || defined(__FreeBSD__) || defined(__NetBSD__) \
    || defined(__OpenBSD__) || defined(__DragonFly__)
#define HAVE_SOCKADDR_UN_SUN_LEN 1
#endif

/*
 * Not defined on purpose:
 *   USE_LOCKING                  only needed by old IRIX/Solaris accept()
 *   HAVE_VA_ARG_LONG_DOUBLE_BUG  only an issue for ancient HP compilers
 *   HAVE_LIBNSL, HAVE_LIBSOCKET  no extra link libraries are required
 */

#define PACKAGE "fcgi"
#define VERSION "2.4.2"

#endif /* LIBFCGI_NODE_FCGI_CONFIG_H */
